"""How strong does the quickstart get, per CPU second? Prints the figures.

Runs `zeroloop quickstart` from nothing in a fresh data directory and measures the CPU
time (user + system, psutil) of its whole process tree: the quickstart, its workers and
every child they start (found by the data directory in their environment, as the workers
are launched detached), sampled every `--sample-s` seconds and kept for processes that
have exited. At each checkpoint of that CPU time (`--cpu-checkpoints`, seconds,
cumulative) the quickstart is stopped (Ctrl-C: it drains; its drain counts too), and the
production model at that moment plays pure MCTS with `--rollouts` simulations (one
random rollout each) for `--games` games, alternating colours, every game played (no
SPRT stop) from the first move. Then the quickstart resumes from the store. CPU time
rather than wall time, so a busy machine does not distort the curve.

Each checkpoint prints the CPU and wall seconds so far, the model, its score and Elo
against MCTS with a 95% interval, and its joint rating (random play = 0) as the
registry, `zeroloop models ls` and the quickstart's screen show it.

    python -m bench.strength --game connect_four --cpu-checkpoints 1800 3600 7200 --rollouts 1000 --games 100
    python -m bench.strength --game tic_tac_toe --cpu-checkpoints 300 600 --rollouts 1000 --games 100 --exhaustive
    python -m bench.strength --game tic_tac_toe --cpu-checkpoints 60 --rollouts 50 --games 10   # a smoke run

With `--exhaustive` each checkpoint also walks every line of opponent moves against the
network's policy alone (no search; zeroloop.workload.exhaustive) and prints how many it loses.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from zeroloop.app import App
from zeroloop.config import load_settings
from zeroloop.pipeline.ratings import ratings
from zeroloop.pipeline.registry import ModelRegistry
from zeroloop.workload import exhaustive
from zeroloop.workload.alphazero import AlphaZeroWorkload
from zeroloop.workload.elo import elo_estimate
from zeroloop.workload.protocol import EvaluateRequest, Player


class TreeCpu:
    """CPU seconds (user + system) of every process of one quickstart, exited ones included.

    The quickstart's workers are launched detached (the local provider double-forks them),
    so they are not its descendants; they, and every child they start, carry the
    quickstart's ZEROLOOP_DATA_DIR in their environment, which is how they are found.
    The bench's own process is left out.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = str(data_dir)
        self.seen: dict[tuple[int, float], float] = {}  # (pid, start time) -> last CPU seconds read
        self.strangers: set[tuple[int, float]] = set()  # processes of someone else

    def _ours(self, process: psutil.Process, key: tuple[int, float]) -> bool:
        if key in self.seen:
            return True
        if key in self.strangers or process.pid == os.getpid():
            return False
        if process.environ().get("ZEROLOOP_DATA_DIR") == self.data_dir:
            return True
        self.strangers.add(key)
        return False

    def sample(self) -> float:
        """Read every live process of the quickstart; return the total, keeping what exited ones last showed."""
        for process in psutil.process_iter():
            try:
                with process.oneshot():
                    key = (process.pid, process.create_time())
                    if self._ours(process, key):
                        times = process.cpu_times()
                        self.seen[key] = times.user + times.system
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue  # gone, or not ours to read: an exited process's last reading stands
        return sum(self.seen.values())


def quickstart_until(data_dir: Path, game: str, workers: int, cpu_s: float, sample_s: float) -> tuple[float, float]:
    """Run the quickstart (resuming what is in `data_dir`) until its tree has used `cpu_s` CPU seconds.

    Returns the CPU seconds the tree used, the drain after Ctrl-C included, and the wall seconds.
    """
    env = {**os.environ, "ZEROLOOP_DATA_DIR": str(data_dir), "COLUMNS": "120"}
    log = data_dir.parent / "quickstart.log"
    began = time.monotonic()
    with log.open("ab") as output:
        command = [sys.executable, "-m", "zeroloop", "quickstart", "--game", game, "--minutes", "100000"]
        process = subprocess.Popen(
            [*command, "--workers", str(workers)], env=env, stdout=output, stderr=subprocess.STDOUT
        )
        tree = TreeCpu(data_dir)
        used = 0.0
        while process.poll() is None and used < cpu_s:
            time.sleep(sample_s)  # a sampling period, not a wait for an event
            used = tree.sample()
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            while process.poll() is None:
                time.sleep(sample_s)
                used = tree.sample()
        if process.returncode not in (0, 130, -signal.SIGINT):
            raise SystemExit(f"the quickstart exited with {process.returncode}: see {log}")
    return used, time.monotonic() - began


def evaluate(
    data_dir: Path, config_key: str, rollouts: int, games: int, *, exhaustive_check: bool = False
) -> dict[str, object]:
    """Play the production model against pure MCTS with `rollouts` simulations; its score, Elo and joint rating."""
    os.environ["ZEROLOOP_DATA_DIR"] = str(data_dir)
    settings = load_settings()
    overrides = dict(settings.workload.overrides.get(config_key, {}))
    # Every game is played (no SPRT early stop) and the model plays its best move from the first one.
    overrides.update(
        {
            "baseline_simulations": rollouts,
            "baseline_rollouts": 1,
            "sprt_alpha": 1e-9,
            "sprt_beta": 1e-9,
            "eval_temperature_moves": 0,
        }
    )
    workload_settings = settings.workload.model_copy(
        update={"overrides": {**settings.workload.overrides, config_key: overrides}, "torch_threads": 2}
    )
    with App(settings, source="bench") as app:
        production = ModelRegistry(app.store, app.bus).production(config_key)
        if production is None:
            return {"model": None}
        with app.store.read() as conn:
            joint = ratings(conn, [production.id], 0.95)[production.id]
        model_path = app.artifacts.fetch(production.artifact_sha256)
        output = Path(tempfile.mkdtemp()) / "match.json"
        began = time.perf_counter()
        evidence = AlphaZeroWorkload(workload_settings).evaluate(
            EvaluateRequest(config_key, Player.of_model(model_path), Player("mcts"), output, games)
        )
        result = json.loads(output.read_text())
        unbeaten = None
        if exhaustive_check:  # the policy alone, against every line of opponent moves
            game = AlphaZeroWorkload(workload_settings).game(config_key)
            found = exhaustive.check(game, exhaustive.network_policy(game, model_path))
            unbeaten = {"lines": found.lines, "lost": found.lost, "drawn": found.drawn, "first_loss": found.first_loss}
    wins, draws, losses = int(result["wins"]), int(result["draws"]), int(result["losses"])
    estimate = elo_estimate(wins, draws, losses, 0.95)
    return {
        "model": production.id,
        "games": int(evidence.counts["games"]),
        "wins": wins,
        "draws": draws,
        "losses": losses,
        "score": round(estimate.score, 3),
        "elo_vs_mcts": round(estimate.elo),
        "elo_95": [round(estimate.low), round(estimate.high)],
        "joint_rating": str(joint),
        "match_s": round(time.perf_counter() - began, 1),
        **({"policy_alone_every_line": unbeaten} if unbeaten else {}),
    }


def main() -> None:
    """Parse arguments, run to each CPU checkpoint, print one line per checkpoint."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--game", default="connect_four")
    parser.add_argument(
        "--cpu-checkpoints",
        type=float,
        nargs="+",
        default=[600.0, 1800.0, 3600.0, 7200.0],
        help="CPU seconds of the quickstart's process tree, cumulative",
    )
    parser.add_argument("--rollouts", type=int, default=1000, help="simulations of the pure-MCTS opponent")
    parser.add_argument("--games", type=int, default=100, help="games per checkpoint, alternating colours")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sample-s", type=float, default=0.5, help="how often the CPU time is read (seconds)")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a fresh temporary directory")
    parser.add_argument(
        "--exhaustive",
        action="store_true",
        help="also play the network's policy alone (no search) against every line of opponent moves (tic-tac-toe)",
    )
    args = parser.parse_args()
    config_key = args.game if args.game.endswith("p") and args.game[-2].isdigit() else f"{args.game}_2p"
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="zeroloop-strength-")) / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    cpu_s = wall_s = 0.0
    print(f"strength of {config_key} per CPU second (data in {data_dir}; quickstart log beside it)", flush=True)
    for checkpoint in sorted(args.cpu_checkpoints):
        if checkpoint > cpu_s:
            used, wall = quickstart_until(data_dir, args.game, args.workers, checkpoint - cpu_s, args.sample_s)
            cpu_s, wall_s = cpu_s + used, wall_s + wall
        figures = evaluate(data_dir, config_key, args.rollouts, args.games, exhaustive_check=args.exhaustive)
        print(
            f"after {cpu_s:.0f} CPU s ({wall_s:.0f} s wall) of quickstart, vs pure MCTS ({args.rollouts} rollouts): "
            f"{json.dumps(figures)}",
            flush=True,
        )


if __name__ == "__main__":
    main()
