"""Benchmark the built-in AlphaZero per CPU-second: selfplay search against the bare inference ceiling, and training.

Run as `python -m bench.selfplay [--cpu-s N] [--config connect_four_2p] [--threads 1]
[--precision auto]`. Everything is measured in CPU-seconds of this process (user + system,
all its threads: `time.process_time`), as the strength benchmark counts its quickstart, so
a busy machine slows the run but does not change the figures much. It prints, in one run:

- the inference ceiling: bare batched forward passes of random observations at the
  selfplay batch size (parallel games), with the same evaluator (precision, threads);
- selfplay: simulations and network evaluations per CPU-second at the config's simulation
  count and batch size, and their ratio to the ceiling;
- where selfplay's CPU went: forward passes against everything else (the tree walk,
  OpenSpiel's game stepping, gathering observations);
- training samples per CPU-second.

A worker's job runs with one torch thread per job (jobs share the machine's cores), so
`--threads 1` is the figure that counts for the quickstart.
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
from zeroloop.workload.protocol import no_progress
from zeroloop.workload.train import train_net


class Ceiling:
    """Bare forward passes of random observations at a fixed batch size: the rate selfplay cannot beat (CPU-s)."""

    def __init__(self, evaluator: Evaluator, obs_shape: tuple[int, int, int], actions: int, batch: int) -> None:
        rng = np.random.default_rng(0)
        self.evaluator = evaluator
        self.obs = (rng.random((batch, *obs_shape)) < 0.3).astype(np.float32)
        self.mask = np.ones((batch, actions), dtype=np.bool_)
        self.evaluations = 0
        self.seconds = 0.0
        evaluator(self.obs, self.mask)

    def once(self) -> float:
        """Run one forward pass, add it to the totals, and return its CPU time (seconds)."""
        start = time.process_time()
        self.evaluator(self.obs, self.mask)
        took = time.process_time() - start
        self.evaluations += self.obs.shape[0]
        self.seconds += took
        return took


def selfplay_rate(
    workload: AlphaZeroWorkload, config_key: str, cpu_s: float, top: Ceiling
) -> tuple[float, float, int, float]:
    """Lockstep selfplay for about `cpu_s` CPU-seconds: simulations/CPU-s, evaluations/CPU-s, positions
    played, and the share of selfplay CPU spent in forward passes. After every selfplay forward pass
    one ceiling pass runs (and is not counted as selfplay), so both rates see the same machine."""
    game = workload.game(config_key)
    params = workload.params(config_key)
    net = new_net(workload.net_shape(game), 0)
    rng = np.random.default_rng(0)
    search = SearchConfig(params.simulations, params.c_puct, params.dirichlet_alpha, params.dirichlet_epsilon)
    evaluator = workload.evaluator(net)
    inference_s = 0.0
    ceiling_s = 0.0

    def timed(obs: FloatArray, mask: BoolArray) -> tuple[FloatArray, FloatArray]:
        nonlocal inference_s, ceiling_s
        began = time.process_time()
        result = evaluator(obs, mask)
        inference_s += time.process_time() - began
        ceiling_s += top.once()
        return result

    mcts = BatchedMCTS(game, network_leaves(game, timed), search, rng)
    states = [game.new_state() for _ in range(params.parallel_games)]
    mcts.search(states, add_noise=True)  # warm-up: compiles the tree kernels, fills caches
    mcts.evaluations = mcts.simulations = 0
    inference_s = 0.0
    positions, played = 0, 0.0
    while played < cpu_s:
        start = time.process_time()
        ceiling_before = ceiling_s
        visits = mcts.search(states, add_noise=True)
        for slot, counts in enumerate(visits):
            game.apply(states[slot], choose_action(counts, True, rng))
            if game.is_terminal(states[slot]):
                states[slot] = game.new_state()
        positions += len(states)
        played += time.process_time() - start - (ceiling_s - ceiling_before)
    return mcts.simulations / played, mcts.evaluations / played, positions, inference_s / played


def training_rate(workload: AlphaZeroWorkload, config_key: str, steps: int) -> float:
    """Training samples per CPU-second on a random window of 8192 positions."""
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
    with tempfile.TemporaryDirectory() as tmp:
        began = time.process_time()
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
            progress=no_progress,
        )
        return steps * params.train_batch_size / (time.process_time() - began)


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-s", type=float, default=20.0, help="selfplay measuring time (CPU-seconds)")
    parser.add_argument("--config", default="connect_four_2p", help="config key to measure")
    parser.add_argument("--train-steps", type=int, default=40, help="training steps to measure")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a worker's job runs with 1)")
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"])
    args = parser.parse_args()
    settings = WorkloadSettings(torch_threads=args.threads, inference_precision=args.precision)
    workload = AlphaZeroWorkload(settings)
    game = workload.game(args.config)
    params = workload.params(args.config)
    shape = workload.net_shape(game)
    evaluator = workload.evaluator(new_net(shape, 0))
    print(
        f"{args.config}: net {shape.blocks} blocks x {shape.channels} channels, {params.simulations} simulations, "
        f"batch {params.parallel_games} games, device {evaluator.device}, inference {evaluator.dtype}, "
        f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}"
    )
    top = Ceiling(evaluator, game.obs_shape, game.num_actions, params.parallel_games)
    sims, evals, moves, share = selfplay_rate(workload, args.config, args.cpu_s, top)
    ceiling_rate = top.evaluations / top.seconds
    print(
        f"inference ceiling:  {ceiling_rate:10.0f} evaluations/CPU-s "
        f"(random observations, batch {params.parallel_games}, one pass after each selfplay pass)"
    )
    print(f"selfplay:           {sims:10.0f} simulations/CPU-s, {evals:10.0f} evaluations/CPU-s ({moves} positions)")
    print(f"selfplay / ceiling: {evals / ceiling_rate:10.1%} (evaluations)")
    print(f"inference share:    {share:10.1%} of selfplay CPU spent in forward passes")
    samples = training_rate(workload, args.config, args.train_steps)
    print(f"training:           {samples:10.0f} samples/CPU-s (batch {params.train_batch_size})")


if __name__ == "__main__":
    main()
