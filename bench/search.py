"""Which search variants pay on a CPU? Head-to-head matches and short training loops; prints the figures.

`play`: two search variants play each other with the same leaf evaluator (uniform priors,
one random rollout per leaf), `--simulations` new simulations per move each, alternating
seats from shared random openings. Variants: `puct`, `gumbel`, `puct+reuse`, `gumbel+reuse`.

`loop`: for each variant, a selfplay -> export -> train loop runs for `--cpu-s` seconds
of this process's CPU time from a fresh network; then the final model (PUCT, the same
evaluation simulations for all) plays pure MCTS. Variants: `base`, `gumbel`, `cap`
(playout caps: a quarter of moves searched with 4x the simulations and recorded),
`reuse`.

    python -m bench.search play --game connect_four --simulations 16 --games 60 --a gumbel --b puct
    python -m bench.search loop --game tic_tac_toe --cpu-s 30 --variants base gumbel cap reuse
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zeroloop.config import WorkloadSettings
from zeroloop.workload.alphazero import AlphaZeroWorkload, gumbel_of
from zeroloop.workload.elo import elo_estimate
from zeroloop.workload.games import Game
from zeroloop.workload.match import MoveChooser, play_match, search_chooser
from zeroloop.workload.mcts import BatchedMCTS, SearchConfig, rollout_leaves
from zeroloop.workload.params import AlphaZeroParams
from zeroloop.workload.protocol import EvaluateRequest, ExportRequest, Player, SelfplayRequest, TrainRequest

_LOOP_VARIANTS: dict[str, dict[str, Any]] = {
    "base": {},
    "gumbel": {"gumbel": True},
    "cap": {"full_search_share": 0.25, "simulations_factor": 4},
    "reuse": {"tree_reuse": True},
}


def _key(game: str) -> str:
    return game if game[-1] == "p" and game[-2].isdigit() else f"{game}_2p"


def _no_sprt(settings: WorkloadSettings) -> WorkloadSettings:
    # Every game is played: the SPRT never decides.
    return settings.model_copy(update={"sprt_alpha": 1e-9, "sprt_beta": 1e-9, "eval_temperature_moves": 0})


class _Timed:
    """A move chooser that adds up the CPU seconds spent choosing."""

    def __init__(self, chooser: MoveChooser) -> None:
        self.chooser = chooser
        self.cpu_s = 0.0
        self.moves = 0

    def __call__(self, states: Any, sample: Any) -> list[int]:
        began = time.process_time()
        moves = self.chooser(states, sample)
        self.cpu_s += time.process_time() - began
        self.moves += len(moves)
        return moves


def _variant(game: Game, name: str, simulations: int, seed: int) -> _Timed:
    rng = np.random.default_rng(seed)
    params = AlphaZeroParams.resolve(WorkloadSettings(gumbel="gumbel" in name), game.config_key)
    config = SearchConfig(simulations, params.c_puct, gumbel=gumbel_of(params))
    mcts = BatchedMCTS(game, rollout_leaves(game, 1, rng), config, rng)
    return _Timed(search_chooser(mcts, rng, reuse="reuse" in name))


def play(args: argparse.Namespace) -> None:
    """Variant `a` against variant `b` at equal simulations per move."""
    game = Game(_key(args.game))
    params = AlphaZeroParams.resolve(_no_sprt(WorkloadSettings(eval_parallel_games=20)), game.config_key)
    first, second = _variant(game, args.a, args.simulations, 1), _variant(game, args.b, args.simulations, 2)
    began = time.perf_counter()
    result = play_match(game, first, second, args.games, params, seed=args.seed)
    estimate = elo_estimate(result["wins"], result["draws"], result["losses"], 0.95)
    print(
        f"{game.config_key} {args.a} vs {args.b} at {args.simulations} simulations: "
        f"+{result['wins']} ={result['draws']} -{result['losses']} of {result['games']} games, "
        f"score {estimate.score:.3f}, Elo {estimate.elo:+.0f} [{estimate.low:+.0f}, {estimate.high:+.0f}]; "
        f"CPU ms per move {1000 * first.cpu_s / max(first.moves, 1):.1f} vs "
        f"{1000 * second.cpu_s / max(second.moves, 1):.1f}; {time.perf_counter() - began:.0f} s wall",
        flush=True,
    )


def _loop(settings: WorkloadSettings, key: str, cpu_s: float, work: Path) -> tuple[Path, int, int]:
    workload = AlphaZeroWorkload(settings)
    batches: list[Path] = []
    model: Path | None = None
    began = time.process_time()
    games = 0
    iteration = 0
    while time.process_time() - began < cpu_s:
        batch = work / f"b{iteration}.npz"
        evidence = workload.selfplay(SelfplayRequest(key, batch, games=32, model=model, seed=iteration))
        games += int(evidence.counts["games"])
        batches.append(batch)
        window = work / f"w{iteration}.npz"
        workload.export(ExportRequest(key, tuple(batches[-4:]), window, window_samples=2000, seed=iteration))
        output = work / f"m{iteration}.pt"
        workload.train(TrainRequest(key, window, output, init_model=model, steps=60, seed=iteration))
        model = output
        iteration += 1
    assert model is not None
    return model, iteration, games


def loop(args: argparse.Namespace) -> None:
    """For each variant: a fixed-CPU training loop, then the model against pure MCTS."""
    key = _key(args.game)
    torch.set_num_threads(1)
    base = WorkloadSettings(
        torch_threads=1,
        blocks=1,
        channels=32,
        value_hidden=32,
        simulations=args.simulations,
        fast_simulations=max(2, args.simulations // 4),
        parallel_games=32,
        train_batch_size=128,
        learning_rate=0.02,
        temperature_moves=4,
        eval_simulations=args.simulations,
        eval_parallel_games=20,
        baseline_simulations=args.rollouts,
        overrides={},
    )
    for name in args.variants:
        update = dict(_LOOP_VARIANTS[name])
        factor = int(update.pop("simulations_factor", 1))
        settings = base.model_copy(update={**update, "simulations": args.simulations * factor})
        work = Path(tempfile.mkdtemp(prefix=f"zeroloop-search-{name}-"))
        model, iterations, games = _loop(settings, key, args.cpu_s, work)
        judge = AlphaZeroWorkload(_no_sprt(base))
        output = work / "match.json"
        evidence = judge.evaluate(
            EvaluateRequest(key, Player.of_model(model), Player("mcts"), output, args.games, seed=args.seed)
        )
        counts = evidence.counts
        estimate = elo_estimate(int(counts["wins"]), int(counts["draws"]), int(counts["losses"]), 0.95)
        print(
            f"{key} loop {name}: {iterations} iterations, {games} selfplay games in {args.cpu_s:g} CPU s; "
            f"vs MCTS-{args.rollouts}: +{counts['wins']:.0f} ={counts['draws']:.0f} -{counts['losses']:.0f}, "
            f"score {estimate.score:.3f}, Elo {estimate.elo:+.0f} [{estimate.low:+.0f}, {estimate.high:+.0f}]",
            flush=True,
        )


def main() -> None:
    """Parse arguments and run one measurement."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    duel = sub.add_parser("play", help="two search variants head to head")
    duel.add_argument("--game", default="connect_four")
    duel.add_argument("--simulations", type=int, default=16)
    duel.add_argument("--games", type=int, default=60)
    duel.add_argument("--a", default="gumbel")
    duel.add_argument("--b", default="puct")
    duel.add_argument("--seed", type=int, default=0)
    train = sub.add_parser("loop", help="fixed-CPU training loops per variant")
    train.add_argument("--game", default="tic_tac_toe")
    train.add_argument("--cpu-s", type=float, default=30.0, help="CPU seconds of training loop per variant")
    train.add_argument("--simulations", type=int, default=16)
    train.add_argument("--rollouts", type=int, default=50, help="simulations of the pure-MCTS judge")
    train.add_argument("--games", type=int, default=40)
    train.add_argument("--variants", nargs="+", default=list(_LOOP_VARIANTS), choices=list(_LOOP_VARIANTS))
    train.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    play(args) if args.command == "play" else loop(args)


if __name__ == "__main__":
    main()
