"""How strong does the quickstart get, and how fast? Prints the figures.

Runs `zeroloop quickstart` from nothing in a fresh data directory, stopping at each
checkpoint (minutes of quickstart, cumulative; it resumes between them), and plays the
production model at that moment against pure MCTS with `--rollouts` simulations (one
random rollout each), alternating colours, for `--games` games.

    python -m bench.strength --game tic_tac_toe --checkpoints 10 --rollouts 100 --games 50
    python -m bench.strength --game connect_four --checkpoints 30 60 --rollouts 1000 --games 20
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from zeroloop.app import App
from zeroloop.config import load_settings
from zeroloop.pipeline.registry import ModelRegistry
from zeroloop.workload.alphazero import AlphaZeroWorkload
from zeroloop.workload.protocol import EvaluateRequest, Player


def quickstart(data_dir: Path, game: str, minutes: float, workers: int) -> None:
    """Run the quickstart for `minutes` in `data_dir` (resuming what is there)."""
    env = {**os.environ, "ZEROLOOP_DATA_DIR": str(data_dir), "COLUMNS": "120"}
    log = data_dir.parent / "quickstart.log"
    with log.open("ab") as output:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "zeroloop",
                "quickstart",
                "--game",
                game,
                "--minutes",
                str(minutes),
                "--workers",
                str(workers),
            ],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            check=True,
        )


def evaluate(data_dir: Path, config_key: str, rollouts: int, games: int) -> dict[str, object]:
    """Play the production model against pure MCTS with `rollouts` simulations."""
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
        model_path = app.artifacts.fetch(production.artifact_sha256)
        output = Path(tempfile.mkdtemp()) / "match.json"
        began = time.perf_counter()
        evidence = AlphaZeroWorkload(workload_settings).evaluate(
            EvaluateRequest(config_key, Player.of_model(model_path), Player("mcts"), output, games)
        )
        result = json.loads(output.read_text())
    return {
        "model": production.id,
        "games": int(evidence.counts["games"]),
        "wins": result["wins"],
        "draws": result["draws"],
        "losses": result["losses"],
        "elo": round(float(result["elo"])),
        "match_s": round(time.perf_counter() - began, 1),
    }


def main() -> None:
    """Parse arguments, run the checkpoints, print one line per checkpoint."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--game", default="tic_tac_toe")
    parser.add_argument("--checkpoints", type=float, nargs="+", default=[10.0], help="minutes, cumulative")
    parser.add_argument("--rollouts", type=int, default=100, help="simulations of the pure-MCTS opponent")
    parser.add_argument("--games", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a fresh temporary directory")
    args = parser.parse_args()
    config_key = args.game if args.game.endswith("p") and args.game[-2].isdigit() else f"{args.game}_2p"
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="zeroloop-strength-")) / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    done = 0.0
    print(f"strength of {config_key} (data in {data_dir}; quickstart log beside it)", flush=True)
    for checkpoint in sorted(args.checkpoints):
        quickstart(data_dir, args.game, checkpoint - done, args.workers)
        done = checkpoint
        figures = evaluate(data_dir, config_key, args.rollouts, args.games)
        print(f"after {checkpoint:g} min of quickstart vs pure MCTS ({args.rollouts} rollouts): {figures}", flush=True)


if __name__ == "__main__":
    main()
