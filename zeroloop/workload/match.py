"""Evaluation matches: a candidate against an opponent with seats rotated, stopped early by SPRT.

In a game of n players the candidate takes one seat and the opponent every other seat;
game i puts the candidate in seat i mod n, so every group of n consecutive games sees the
candidate in each seat once. Each group starts from the same opening: a few uniformly
random moves drawn from the match seed and the group's number, so games differ from one
another and from one match to the next (a different seed), yet the same seed replays the
same match, and no seat is favoured by its opening.

Games are played in rounds of about `eval_parallel_games` games in lockstep; in every move
the games where one side is to move are searched together, so a model player's inference
is batched as in selfplay. After each round the SPRT is consulted.

Scores are pairwise: in every game the candidate is compared with each opponent seat (win
when its return is higher, draw when equal, loss when lower), so a two-player game is one
outcome and a three-player game two. `wins`, `draws` and `losses` count these outcomes;
`game_results` has every game's seats, returns and ranks for ratings that want more.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyspiel

from zeroloop.workload.elo import Decision, elo_estimate, sprt_bounds, sprt_decision, sprt_llr
from zeroloop.workload.games import Game, State
from zeroloop.workload.mcts import BatchedMCTS, choose_action
from zeroloop.workload.params import AlphaZeroParams
from zeroloop.workload.progress import truncation_values
from zeroloop.workload.tree import SearchTree

log = logging.getLogger(__name__)

# Most memory one MCTSBot search may hold (MB); a search at the ladder's 3,000 simulations holds a few.
_BOT_MEMORY_MB = 1000

# Moves by other players between two turns of one player that a kept tree is walked through.
_MAX_MOVES_BETWEEN = 12
# Kept trees are at most one per game in flight; the bound only drops finished games' trees.
_KEPT_TREES = 256

MoveChooser = Callable[[Sequence[State], Sequence[bool]], list[int]]
"""Chooses one action for each state; the flags say whether to sample (opening moves) or play best."""


def search_chooser(mcts: BatchedMCTS, rng: np.random.Generator, *, reuse: bool = False) -> MoveChooser:
    """A player that searches all its positions in one batched MCTS call.

    With `reuse`, the subtree under each move it plays is kept, keyed by the game's move
    history, and walked down the moves played since when that game comes back to it.
    """
    kept: dict[tuple[int, ...], SearchTree] = {}

    def choose(states: Sequence[State], sample: Sequence[bool]) -> list[int]:
        histories = [tuple(int(a) for a in state.history()) for state in states] if reuse else []
        trees = [carried_tree(kept, history) for history in histories] if reuse else None
        result = mcts.run(states, reuse=trees)
        # Sampled moves follow the search's policy (visits, or Gumbel's improved policy); others its pick.
        moves = [
            choose_action(result.policy[row], True, rng) if flag else int(result.action[row])
            for row, flag in enumerate(sample)
        ]
        if reuse:
            for history, tree, move in zip(histories, result.trees, moves, strict=True):
                subtree = tree.advance(move)
                if subtree is not None:
                    kept[(*history, move)] = subtree
            while len(kept) > _KEPT_TREES:
                del kept[next(iter(kept))]
        return moves

    return choose


def carried_tree(kept: dict[tuple[int, ...], SearchTree], history: tuple[int, ...]) -> SearchTree | None:
    """The kept tree of the latest earlier position of this game, walked down to `history`; None if none."""
    # back = 0: this player also made the last move (an opponent holding two seats, or a game
    # where one player moves twice in a row).
    for back in range(min(len(history), _MAX_MOVES_BETWEEN) + 1):
        tree = kept.pop(history[: len(history) - back], None)
        if tree is None:
            continue
        for action in history[len(history) - back :]:
            walked = tree.advance(action)
            if walked is None:
                return None
            tree = walked
        return tree
    return None


def random_chooser(game: Game, rng: np.random.Generator) -> MoveChooser:
    """A player that picks uniformly among legal actions."""

    def choose(states: Sequence[State], sample: Sequence[bool]) -> list[int]:
        moves = []
        for state in states:
            legal = game.legal_actions(state)
            moves.append(legal[int(rng.integers(len(legal)))])
        return moves

    return choose


def mctsbot(game: Game, simulations: int, seed: int) -> Any:
    """OpenSpiel's own pure MCTS (its C++ `MCTSBot`: UCT with c = 2, one random rollout per leaf, solving
    proven nodes) with `simulations` per move, its random streams seeded by `seed`: a yardstick nobody here
    wrote. The C++ bot runs the same search as OpenSpiel's Python `mcts.MCTSBot` at about a sixteenth of its
    CPU per move (docs/workload.md, "Strength per CPU-second")."""
    rollouts = pyspiel.RandomRolloutEvaluator(1, seed)
    return pyspiel.MCTSBot(game.openspiel, rollouts, 2.0, simulations, _BOT_MEMORY_MB, True, seed + 1, False)


def mctsbot_chooser(game: Game, simulations: int, rng: np.random.Generator) -> MoveChooser:
    """A player that is OpenSpiel's MCTSBot (`mctsbot`), one move at a time (it has no batched search)."""
    bot = mctsbot(game, simulations, int(rng.integers(2**31 - 2)))

    def choose(states: Sequence[State], sample: Sequence[bool]) -> list[int]:
        return [int(bot.step(state)) for state in states]

    return choose


def ranks_of(returns: Sequence[float]) -> list[int]:
    """Competition ranks of the seats by return: 1 is best, tied seats share the better rank."""
    return [1 + sum(other > mine for other in returns) for mine in returns]


@dataclass
class MatchScore:
    """Results so far: games played, pairwise outcomes from the candidate's side, and each game's record."""

    wins: int = 0
    draws: int = 0
    losses: int = 0
    games: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)

    def add(
        self,
        number: int,
        candidate_seat: int,
        returns: Sequence[float],
        moves: int,
        opening: Sequence[int],
        *,
        adjudicated: bool = False,
    ) -> None:
        """Count finished game `number` (0-based) given every seat's return (OpenSpiel's units; for a game
        cut off at `eval_max_moves`, `adjudicated`, its progress values)."""
        mine = returns[candidate_seat]
        for seat, theirs in enumerate(returns):
            if seat == candidate_seat:
                continue
            if mine > theirs:
                self.wins += 1
            elif mine < theirs:
                self.losses += 1
            else:
                self.draws += 1
        self.games += 1
        self.records.append(
            {
                "game": number,
                "candidate_seat": candidate_seat,
                "returns": [float(r) for r in returns],
                "ranks": ranks_of(returns),
                "moves": moves,
                "opening": [int(a) for a in opening],
                **({"adjudicated": True} if adjudicated else {}),
            }
        )


def random_opening(game: Game, moves: int, seed: int, group: int) -> list[int]:
    """Up to `moves` uniformly random moves from the start, the same for the same (seed, group).

    The opening stops short rather than end the game, so the players always get to play.
    """
    rng = np.random.default_rng([seed, group])
    state = game.new_state()
    opening: list[int] = []
    for _ in range(moves):
        legal = game.legal_actions(state)
        action = legal[int(rng.integers(len(legal)))]
        after = game.child(state, action)
        if game.is_terminal(after):
            break
        opening.append(action)
        state = after
    return opening


def _play_round(
    game: Game,
    candidate: MoveChooser,
    opponent: MoveChooser,
    *,
    first: int,
    games: int,
    params: AlphaZeroParams,
    seed: int,
    score: MatchScore,
) -> None:
    n = game.num_players
    numbers = range(first, first + games)
    openings = {g: random_opening(game, params.eval_opening_moves, seed, g // n) for g in numbers}
    states = {g: game.state_after(openings[g]) for g in numbers}
    moves = dict.fromkeys(numbers, 0)
    active = list(numbers)
    cut_off = truncation_values(game)
    for _ in range(game.max_length + 1):
        if not active:
            return
        # Groups are fixed before anyone moves, so each game gets exactly one move per pass.
        ours = [g for g in active if game.to_play(states[g]) == g % n]
        theirs = [g for g in active if game.to_play(states[g]) != g % n]
        for chooser, group in ((candidate, ours), (opponent, theirs)):
            if not group:
                continue
            sample = [moves[g] < params.eval_temperature_moves for g in group]
            actions = chooser([states[g] for g in group], sample)
            for g, action in zip(group, actions, strict=True):
                game.apply(states[g], action)
                moves[g] += 1
        still = []
        for g in active:
            if game.is_terminal(states[g]):
                score.add(g, g % n, game.returns(states[g]), moves[g], openings[g])
            elif 0 < params.eval_max_moves <= moves[g]:
                # Adjudicated like a selfplay game cut off: by the progress lead (or the returns so far).
                returns = [float(v) for v in cut_off(states[g])]
                score.add(g, g % n, returns, moves[g], openings[g], adjudicated=True)
            else:
                still.append(g)
        active = still


def play_match(
    game: Game, candidate: MoveChooser, opponent: MoveChooser, max_games: int, params: AlphaZeroParams, seed: int = 0
) -> dict[str, Any]:
    """Play until the SPRT decides or `max_games` games are played; the match result as plain data.

    `seed` picks the openings (and nothing else here: the choosers hold their own generators).
    """
    n = game.num_players
    # A round is whole groups of n games, so every opening is played from every seat.
    round_games = max(n, params.eval_parallel_games // n * n)
    score = MatchScore()
    decision = Decision.CONTINUE
    llr = 0.0
    rounds = 0
    while score.games < max_games and decision is Decision.CONTINUE:
        games = min(round_games, max_games - score.games)
        _play_round(game, candidate, opponent, first=score.games, games=games, params=params, seed=seed, score=score)
        rounds += 1
        llr = sprt_llr(score.wins, score.draws, score.losses, params.sprt_elo0, params.sprt_elo1)
        decision = sprt_decision(llr, params.sprt_alpha, params.sprt_beta)
        log.debug("match round %d: %s llr %.2f", rounds, score, llr)
    estimate = elo_estimate(score.wins, score.draws, score.losses, params.elo_confidence)
    lower, upper = sprt_bounds(params.sprt_alpha, params.sprt_beta)
    return {
        "games": score.games,
        "wins": score.wins,
        "draws": score.draws,
        "losses": score.losses,
        "score": estimate.score,
        "elo": estimate.elo,
        "elo_low": estimate.low,
        "elo_high": estimate.high,
        "confidence": params.elo_confidence,
        "stopped_early": decision is not Decision.CONTINUE and score.games < max_games,
        "sprt": {
            "elo0": params.sprt_elo0,
            "elo1": params.sprt_elo1,
            "alpha": params.sprt_alpha,
            "beta": params.sprt_beta,
            "llr": llr,
            "lower": lower,
            "upper": upper,
            "decision": decision.value,
        },
        "players": n,
        "seed": seed,
        "game_results": sorted(score.records, key=lambda record: int(record["game"])),
    }
