"""Benchmark the built-in AlphaZero: selfplay throughput against the raw inference ceiling, and training speed.

Run as `python -m bench.selfplay [--seconds N] [--config connect_four_2p]`. It prints:
selfplay positions/s and network evaluations/s at the default simulation count and
batch size (parallel games), the rate of bare forward passes of random observations at
the same batch size (the ceiling), their ratio, and training samples/s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

# Python puts this script's folder first on the path, where sibling scripts (bench/queue.py)
# would shadow standard-library modules that torch imports; drop it before importing torch.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import numpy as np
import torch

from zeroloop.config import WorkloadSettings
from zeroloop.workload.alphazero import AlphaZeroWorkload
from zeroloop.workload.games import BoolArray, FloatArray
from zeroloop.workload.mcts import BatchedMCTS, SearchConfig, choose_action, network_leaves
from zeroloop.workload.network import Evaluator, new_net
from zeroloop.workload.protocol import Progress
from zeroloop.workload.train import train_net


class Ceiling:
    """Bare forward passes of random observations at a fixed batch size: the rate selfplay cannot beat."""

    def __init__(self, evaluator: Evaluator, obs_shape: tuple[int, int, int], actions: int, batch: int) -> None:
        rng = np.random.default_rng(0)
        self.evaluator = evaluator
        self.obs = (rng.random((batch, *obs_shape)) < 0.3).astype(np.float32)
        self.mask = np.ones((batch, actions), dtype=np.bool_)
        self.evaluations = 0
        self.seconds = 0.0
        evaluator(self.obs, self.mask)

    def once(self) -> float:
        """Run one forward pass, add it to the totals, and return its duration (seconds)."""
        start = time.perf_counter()
        self.evaluator(self.obs, self.mask)
        took = time.perf_counter() - start
        self.evaluations += self.obs.shape[0]
        self.seconds += took
        return took


def selfplay_rate(
    workload: AlphaZeroWorkload, config_key: str, seconds: float, top: Ceiling
) -> tuple[float, float, int, float]:
    """Lockstep selfplay for about `seconds`: positions/s, evaluations/s, positions played, and the share
    of selfplay time spent in network inference. After every selfplay forward pass one ceiling pass runs
    (and is not counted as selfplay time), so both rates see the same machine load, even on a busy host."""
    game = workload.game(config_key)
    params = workload.params(config_key)
    net = new_net(workload.net_shape(game), 0)
    rng = np.random.default_rng(0)
    search = SearchConfig(params.simulations, params.c_puct, params.dirichlet_alpha, params.dirichlet_epsilon)
    evaluator = Evaluator(net, workload.settings.device)
    inference_s = 0.0
    ceiling_s = 0.0

    def timed(obs: FloatArray, mask: BoolArray) -> tuple[FloatArray, FloatArray]:
        nonlocal inference_s, ceiling_s
        began = time.perf_counter()
        result = evaluator(obs, mask)
        inference_s += time.perf_counter() - began
        ceiling_s += top.once()
        return result

    mcts = BatchedMCTS(game, network_leaves(game, timed), search, rng)
    states = [game.new_state() for _ in range(params.parallel_games)]
    positions, played = 0, 0.0
    while played < seconds:
        start = time.perf_counter()
        ceiling_before = ceiling_s
        visits = mcts.search(states, add_noise=True)
        for slot, counts in enumerate(visits):
            game.apply(states[slot], choose_action(counts, True, rng))
            if game.is_terminal(states[slot]):
                states[slot] = game.new_state()
        positions += len(states)
        played += time.perf_counter() - start - (ceiling_s - ceiling_before)
    return positions / played, mcts.evaluations / played, positions, inference_s / played


def training_rate(workload: AlphaZeroWorkload, config_key: str, steps: int) -> float:
    """Training samples/s on a random window of 8192 positions."""
    game = workload.game(config_key)
    params = workload.params(config_key)
    rng = np.random.default_rng(0)
    count = 8192
    policy = rng.random((count, game.num_actions)).astype(np.float32)
    window = {
        "obs": (rng.random((count, *game.obs_shape)) < 0.3).astype(np.float32),
        "policy": policy / policy.sum(axis=1, keepdims=True),
        "value": rng.choice([-1.0, 0.0, 1.0], (count, game.num_players)).astype(np.float32),
        "mask": np.ones((count, game.num_actions), dtype=np.bool_),
        "source_samples": np.asarray(count),
    }
    rates: list[float] = []

    def progress(report: Progress) -> None:
        rates.append(report.samples_per_s)

    with tempfile.TemporaryDirectory() as tmp:
        train_net(
            new_net(workload.net_shape(game), 0),
            window,
            params=params,
            steps=steps,
            output=Path(tmp) / "model.pt",
            config_key=config_key,
            window_sha256="bench",
            device=workload.settings.device,
            seed=0,
            progress=progress,
        )
    # The first report includes warm-up; the rest are steady state.
    return float(np.mean(rates[1:] if len(rates) > 1 else rates))


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="selfplay measuring time (seconds)")
    parser.add_argument("--config", default="connect_four_2p", help="config key to measure")
    parser.add_argument("--train-steps", type=int, default=60, help="training steps to measure")
    args = parser.parse_args()
    settings = WorkloadSettings()
    workload = AlphaZeroWorkload(settings)
    game = workload.game(args.config)
    params = workload.params(args.config)
    shape = workload.net_shape(game)
    print(
        f"{args.config}: net {shape.blocks} blocks x {shape.channels} channels, {params.simulations} simulations, "
        f"batch {params.parallel_games} games, device {settings.device}, torch threads {torch.get_num_threads()}, "
        f"cpus {os.cpu_count()}"
    )
    evaluator = Evaluator(new_net(shape, 0), settings.device)
    top = Ceiling(evaluator, game.obs_shape, game.num_actions, params.parallel_games)
    positions, evals, moves, share = selfplay_rate(workload, args.config, args.seconds, top)
    ceiling_rate = top.evaluations / top.seconds
    print(
        f"inference ceiling:  {ceiling_rate:10.0f} evaluations/s "
        f"(random observations, batch {params.parallel_games}, one pass after each selfplay pass)"
    )
    print(f"selfplay:           {evals:10.0f} evaluations/s, {positions:8.1f} positions/s ({moves} positions)")
    print(f"selfplay / ceiling: {evals / ceiling_rate:10.1%}")
    print(f"inference share:    {share:10.1%} of selfplay time spent in forward passes")
    samples = training_rate(workload, args.config, args.train_steps)
    print(f"training:           {samples:10.0f} samples/s (batch {params.train_batch_size})")


if __name__ == "__main__":
    main()
