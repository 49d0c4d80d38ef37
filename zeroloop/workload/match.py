"""Evaluation matches: a candidate against an opponent, alternating colours, stopped early by SPRT.

Games are played in rounds of `eval_parallel_games` games in lockstep, half of them with
the candidate moving first; in every move the games where one side is to move are
searched together, so a model player's inference is batched as in selfplay. After each
round the SPRT is consulted and the match ends once it has decided.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from zeroloop.workload.elo import Decision, elo_estimate, sprt_bounds, sprt_decision, sprt_llr
from zeroloop.workload.games import Game, State
from zeroloop.workload.mcts import BatchedMCTS, choose_action
from zeroloop.workload.params import AlphaZeroParams

log = logging.getLogger(__name__)

MoveChooser = Callable[[Sequence[State], Sequence[bool]], list[int]]
"""Chooses one action for each state; the flags say whether to sample (opening moves) or play best."""


def search_chooser(mcts: BatchedMCTS, rng: np.random.Generator) -> MoveChooser:
    """A player that searches all its positions in one batched MCTS call."""

    def choose(states: Sequence[State], sample: Sequence[bool]) -> list[int]:
        visits = mcts.search(states)
        return [choose_action(v, s, rng) for v, s in zip(visits, sample, strict=True)]

    return choose


def random_chooser(game: Game, rng: np.random.Generator) -> MoveChooser:
    """A player that picks uniformly among legal actions."""

    def choose(states: Sequence[State], sample: Sequence[bool]) -> list[int]:
        moves = []
        for state in states:
            legal = game.legal_actions(state)
            moves.append(legal[int(rng.integers(len(legal)))])
        return moves

    return choose


@dataclass
class MatchScore:
    """Results so far from the candidate's point of view (games)."""

    wins: int = 0
    draws: int = 0
    losses: int = 0

    @property
    def games(self) -> int:
        """Games played."""
        return self.wins + self.draws + self.losses

    def add(self, candidate_return: float) -> None:
        """Count one finished game given the candidate's return."""
        if candidate_return > 0:
            self.wins += 1
        elif candidate_return < 0:
            self.losses += 1
        else:
            self.draws += 1


def _play_round(
    game: Game, candidate: MoveChooser, opponent: MoveChooser, *, games: int, opening_moves: int, score: MatchScore
) -> None:
    states = [game.new_state() for _ in range(games)]
    candidate_seat = [number % 2 for number in range(games)]
    moves = [0] * games
    active = list(range(games))
    for _ in range(game.max_length + 1):
        if not active:
            return
        # Groups are fixed before anyone moves, so each game gets exactly one move per pass.
        ours = [g for g in active if game.to_play(states[g]) == candidate_seat[g]]
        theirs = [g for g in active if game.to_play(states[g]) != candidate_seat[g]]
        for chooser, group in ((candidate, ours), (opponent, theirs)):
            if not group:
                continue
            actions = chooser([states[g] for g in group], [moves[g] < opening_moves for g in group])
            for g, action in zip(group, actions, strict=True):
                game.apply(states[g], action)
                moves[g] += 1
        still = []
        for g in active:
            if game.is_terminal(states[g]):
                score.add(game.returns(states[g])[candidate_seat[g]])
            else:
                still.append(g)
        active = still


def play_match(
    game: Game, candidate: MoveChooser, opponent: MoveChooser, max_games: int, params: AlphaZeroParams
) -> dict[str, Any]:
    """Play until the SPRT decides or `max_games` games are played; the match result as plain data."""
    score = MatchScore()
    decision = Decision.CONTINUE
    llr = 0.0
    rounds = 0
    while score.games < max_games and decision is Decision.CONTINUE:
        games = min(params.eval_parallel_games, max_games - score.games)
        _play_round(game, candidate, opponent, games=games, opening_moves=params.eval_temperature_moves, score=score)
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
    }
