"""Is the yardstick the same search in C++? OpenSpiel's C++ MCTSBot against its Python MCTSBot.

zeroloop's baselines and `bench/strength.py` play `pyspiel.MCTSBot` (C++); rounds 1 to 4 of
docs/workload.md were judged by `open_spiel.python.algorithms.mcts.MCTSBot` (Python). Both
are set up alike (uct_c 2, `--simulations` simulations, one random rollout per leaf,
solve=True) with their own seeds per game, and play `--games` games from the first move,
alternating colours (game i: the C++ bot is player i mod 2). Prints the C++ bot's score with
a 95% interval and the Elo it implies, and each bot's CPU-seconds per move; the same search
scores one half within the interval.

    python -m bench.mctsbot --game connect_four --simulations 1000 --games 200
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyspiel
from open_spiel.python.algorithms import mcts

from zeroloop.workload.elo import elo_estimate


def main() -> None:
    """Play the two bots and print the score, its interval and the CPU per move of each."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--game", default="connect_four", help="a two-player OpenSpiel game")
    parser.add_argument("--simulations", type=int, default=1000)
    parser.add_argument("--games", type=int, default=200)
    args = parser.parse_args()
    game = pyspiel.load_game(args.game)
    if game.num_players() != 2:
        parser.error(f"{args.game} has {game.num_players()} players: this benchmark plays two-player games")
    tally = [0, 0, 0]  # the C++ bot's wins, draws, losses
    cpu = {"C++": 0.0, "Python": 0.0}
    moves = {"C++": 0, "Python": 0}
    for number in range(args.games):
        bots = {
            "C++": pyspiel.MCTSBot(
                game, pyspiel.RandomRolloutEvaluator(1, 1000 + number), 2.0, args.simulations, 1000, True,
                2000 + number, False,
            ),
            "Python": mcts.MCTSBot(
                game, 2.0, args.simulations, mcts.RandomRolloutEvaluator(1, np.random.RandomState(3000 + number)),
                solve=True, random_state=np.random.RandomState(4000 + number),
            ),
        }  # fmt: skip
        seat = number % 2  # the C++ bot's
        state = game.new_initial_state()
        while not state.is_terminal():
            side = "C++" if state.current_player() == seat else "Python"
            began = time.process_time()
            action = bots[side].step(state)
            cpu[side] += time.process_time() - began
            moves[side] += 1
            state.apply_action(action)
        mine = state.returns()[seat]
        tally[0 if mine > 0 else 1 if mine == 0 else 2] += 1
        if (number + 1) % 20 == 0:
            print(f"{number + 1} games: C++ {tally[0]}/{tally[1]}/{tally[2]}", flush=True)
    estimate = elo_estimate(tally[0], tally[1], tally[2], 0.95)
    per_move = {side: round(cpu[side] / max(moves[side], 1), 4) for side in cpu}
    print(
        f"C++ against Python MCTSBot at {args.simulations} simulations, {args.games} games of {args.game}: "
        f"{tally[0]}/{tally[1]}/{tally[2]}, score {estimate.score:.3f}, Elo {estimate.elo:+.0f} "
        f"[{estimate.low:+.0f}, {estimate.high:+.0f}]; CPU-s per move {per_move}"
    )


if __name__ == "__main__":
    main()
