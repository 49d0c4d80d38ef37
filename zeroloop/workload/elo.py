"""Match statistics: Elo difference with a confidence interval, and the SPRT that stops a match early.

Scores count a win 1, a draw 1/2 and a loss 0. The interval uses the normal approximation
of the mean score with the observed per-game variance; the SPRT is the generalized
(normal-approximation) test of Elo `elo0` against `elo1` used by chess-engine testing.

The gate's statistics (`smoothed`, `elo_bounds`, `gate_llr`) add `prior_games` virtual games,
half won and half lost, before taking the mean and the variance: a run of draws then has a
small, honest variance that shrinks as 1/games instead of none at all, and a clean sweep a
finite Elo difference.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

from zeroloop.errors import WorkloadError

_EPS = 1e-6


class Decision(enum.StrEnum):
    """The state of an SPRT: still undecided, or one hypothesis accepted."""

    CONTINUE = "continue"
    ACCEPT_H0 = "accept_h0"
    ACCEPT_H1 = "accept_h1"


@dataclass(frozen=True)
class EloEstimate:
    """An Elo difference (Elo points, positive: the first player is stronger) and its interval."""

    elo: float
    low: float
    high: float
    score: float


def elo_from_score(score: float) -> float:
    """The Elo difference whose expected score is `score` (clamped into (0, 1))."""
    score = min(max(score, _EPS), 1.0 - _EPS)
    return float(-400.0 * math.log10(1.0 / score - 1.0))


def score_from_elo(elo: float) -> float:
    """The expected score of a player `elo` points stronger."""
    return 1.0 / (1.0 + math.pow(10.0, -elo / 400.0))


def _mean_var(wins: int, draws: int, losses: int) -> tuple[float, float, int]:
    games = wins + draws + losses
    if games == 0:
        return 0.5, 0.25, 0
    score = (wins + 0.5 * draws) / games
    var = (wins * (1.0 - score) ** 2 + draws * (0.5 - score) ** 2 + losses * score**2) / games
    return score, var, games


def elo_estimate(wins: int, draws: int, losses: int, confidence: float) -> EloEstimate:
    """The Elo difference of a match result and its two-sided `confidence` interval (Elo points)."""
    score, var, games = _mean_var(wins, draws, losses)
    if games == 0:
        return EloEstimate(0.0, -math.inf, math.inf, 0.5)
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    # A match with no spread (all wins, say) still leaves doubt; use the variance of a coin flip
    # scaled down so the interval shrinks with games instead of collapsing to a point.
    spread = z * math.sqrt(max(var, 0.25 / games) / games)
    return EloEstimate(elo_from_score(score), elo_from_score(score - spread), elo_from_score(score + spread), score)


def sprt_llr(wins: int, draws: int, losses: int, elo0: float, elo1: float) -> float:
    """Log-likelihood ratio of H1 (difference `elo1`) over H0 (difference `elo0`) for a match result."""
    score, var, games = _mean_var(wins, draws, losses)
    if games == 0:
        return 0.0
    # The same floor as the interval: a short one-sided run must not count as certainty.
    var = max(var, 0.25 / games)
    s0, s1 = score_from_elo(elo0), score_from_elo(elo1)
    return games * (s1 - s0) * (2.0 * score - s0 - s1) / (2.0 * var)


def sprt_bounds(alpha: float, beta: float) -> tuple[float, float]:
    """Lower and upper LLR bounds for false-positive rate `alpha` and false-negative rate `beta`."""
    return math.log(beta / (1.0 - alpha)), math.log((1.0 - beta) / alpha)


def sprt_decision(llr: float, alpha: float, beta: float) -> Decision:
    """Whether the SPRT with this LLR has decided."""
    lower, upper = sprt_bounds(alpha, beta)
    if llr >= upper:
        return Decision.ACCEPT_H1
    if llr <= lower:
        return Decision.ACCEPT_H0
    return Decision.CONTINUE


@dataclass(frozen=True)
class Smoothed:
    """A match's mean score and per-game score variance with the prior counted in, over `games` (virtual included)."""

    score: float
    variance: float
    games: float

    @property
    def standard_error(self) -> float:
        """Standard error of the mean score."""
        return math.sqrt(self.variance / self.games)


def smoothed(wins: float, draws: float, losses: float, prior_games: float = 1.0) -> Smoothed:
    """The mean and variance of a match with `prior_games` virtual games, half won and half lost."""
    half = prior_games / 2.0
    games = wins + draws + losses + prior_games
    score = (wins + half + 0.5 * draws) / games
    squares = (wins + half) * (1.0 - score) ** 2 + draws * (0.5 - score) ** 2 + (losses + half) * score**2
    return Smoothed(score, squares / games, games)


def elo_bounds(wins: float, draws: float, losses: float, confidence: float, prior_games: float = 1.0) -> EloEstimate:
    """The smoothed Elo difference and its ONE-sided bounds at `confidence` (each bound holds with that chance)."""
    stats = smoothed(wins, draws, losses, prior_games)
    spread = NormalDist().inv_cdf(confidence) * stats.standard_error
    return EloEstimate(
        elo_from_score(stats.score),
        elo_from_score(stats.score - spread),
        elo_from_score(stats.score + spread),
        stats.score,
    )


def gate_llr(wins: float, draws: float, losses: float, elo0: float, elo1: float, prior_games: float = 1.0) -> float:
    """The SPRT log-likelihood ratio of Elo `elo1` over Elo `elo0`, with the smoothed mean and variance."""
    stats = smoothed(wins, draws, losses, prior_games)
    s0, s1 = score_from_elo(elo0), score_from_elo(elo1)
    return stats.games * (s1 - s0) * (2.0 * stats.score - s0 - s1) / (2.0 * stats.variance)


@dataclass
class Tally:
    """One pair's results from the first player's side (games)."""

    wins: int = 0
    draws: int = 0
    losses: int = 0


def pairwise_outcomes(seats: Sequence[str], scores: Sequence[float]) -> dict[tuple[str, str], Tally]:
    """Decompose one game of n seats into one outcome per pair of distinct players.

    `seats[k]` names the player in seat k and `scores[k]` is that seat's result (a return,
    or minus its place for a ranking: see `scores_from_places`). A player that holds
    several seats stands by the mean of its seats' scores. Each pair of distinct players
    gets exactly one outcome per game, keyed by the pair in order of first seat: the higher
    standing wins, equal standings draw. So a 4-player game among 4 different players
    gives 6 outcomes and one between two models sharing the seats gives 1, and a game never
    counts twice for the same pair. The outcomes of one game are not independent of each
    other; the joint rating treats them as if they were (docs/pipeline.md).
    """
    if len(seats) != len(scores):
        raise WorkloadError(f"{len(seats)} seats but {len(scores)} scores: give one score per seat")
    order: list[str] = []
    totals: dict[str, list[float]] = {}
    for player, score in zip(seats, scores, strict=True):
        if player not in totals:
            order.append(player)
            totals[player] = []
        totals[player].append(float(score))
    standing = {player: sum(values) / len(values) for player, values in totals.items()}
    outcomes: dict[tuple[str, str], Tally] = {}
    for i, first in enumerate(order):
        for second in order[i + 1 :]:
            tally = Tally()
            if standing[first] > standing[second]:
                tally.wins = 1
            elif standing[first] < standing[second]:
                tally.losses = 1
            else:
                tally.draws = 1
            outcomes[(first, second)] = tally
    return outcomes


def scores_from_places(places: Sequence[int]) -> list[float]:
    """Seat scores from finishing places (1 = first; equal places tie): higher is better."""
    return [-float(place) for place in places]


def add_outcomes(total: dict[tuple[str, str], Tally], game: Mapping[tuple[str, str], Tally]) -> None:
    """Add one game's pairwise outcomes to a running tally, keeping each pair's orientation as first seen."""
    for (first, second), tally in game.items():
        if (second, first) in total:
            into, (wins, losses) = total[(second, first)], (tally.losses, tally.wins)
        else:
            into, (wins, losses) = total.setdefault((first, second), Tally()), (tally.wins, tally.losses)
        into.wins += wins
        into.draws += tally.draws
        into.losses += losses
