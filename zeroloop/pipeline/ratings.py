"""How a model's rating reads on screen: one number, its interval, and what it is relative to.

The registry rates a model from one match (see `ModelRegistry._rate`): against the model
it was measured against, or against random play while it has met no model. Its rating is
that opponent's rating plus the match's Elo difference, computed from the score with half a
win and half a loss of prior. This module shows exactly that number, with an interval that
carries the match's uncertainty and, in quadrature, the opponent's own: a chain of matches
back to random play (Elo 0). A model no match has rated reads "not rated", whatever its
row holds (a new candidate starts with its parent's number).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from sqlalchemy import Connection

from zeroloop.store.queries import models as queries
from zeroloop.workload.elo import elo_from_score

RELATIVE_TO = "random play = 0"
RANDOM = "random"
_UNRATED_BASELINES = frozenset({"mcts"})
_ELO_PER_LOGIT = 400.0 / math.log(10.0)


@dataclass(frozen=True)
class Rating:
    """A model's rating in Elo points relative to random play, and the half-width of its interval."""

    elo: float | None
    half_width: float = math.inf
    confidence: float = 0.95
    rated_by: str | None = None  # the opponent of the match that set it

    @property
    def rated(self) -> bool:
        """Whether any match has rated the model."""
        return self.elo is not None

    def __str__(self) -> str:
        if self.elo is None:
            return "not rated"
        return f"{self.elo:.0f} ± {self.half_width:.0f}"

    def describe(self) -> str:
        """The rating with what it is relative to and the interval's confidence, e.g. for a status line."""
        if self.elo is None:
            return "not rated"
        return f"Elo {self} ({RELATIVE_TO}, {self.confidence:.0%} interval)"


def signed(elo: float) -> str:
    """An Elo difference with its sign, rounded to whole points; never `-0`."""
    return f"{round(elo):+d}"


def match_difference(wins: int, draws: int, losses: int, confidence: float) -> tuple[float, float]:
    """The Elo difference a match gives (as the registry computes it) and the half-width of its interval.

    The half-width comes from the score's standard error with the prior counted as one game
    (half won, half lost), taken through the slope of the Elo curve at that score: finite
    for a clean sweep, and shrinking as 1/sqrt(games).
    """
    games = wins + draws + losses + 1
    score = (wins + 0.5 * draws + 0.5) / games
    squares = wins * (1.0 - score) ** 2 + draws * (0.5 - score) ** 2 + losses * score**2
    squares += 0.5 * (1.0 - score) ** 2 + 0.5 * score**2  # the prior game
    standard_error = math.sqrt(squares) / games  # sqrt(variance per game / games)
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    return elo_from_score(score), z * _ELO_PER_LOGIT * standard_error / (score * (1.0 - score))


def rating_match(matches: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The match that set a model's rating, from its matches oldest first; None when none did."""
    against_models = [m for m in matches if m["player_b"] != RANDOM and m["player_b"] not in _UNRATED_BASELINES]
    if against_models:
        return against_models[-1]
    against_random = [m for m in matches if m["player_b"] == RANDOM]
    return against_random[-1] if against_random else None


def ratings(conn: Connection, model_ids: Iterable[str], confidence: float) -> dict[str, Rating]:
    """The rating of each model in `model_ids`, read in one transaction `conn`."""
    found: dict[str, Rating] = {}

    def rate(model_id: str, visiting: frozenset[str]) -> Rating:
        if model_id in found:
            return found[model_id]
        row = queries.get_model(conn, model_id)
        match = rating_match([dict(m) for m in queries.matches_of(conn, model_id)]) if row else None
        if row is None or match is None or model_id in visiting:
            result = Rating(None, confidence=confidence)
        else:
            _diff, half = match_difference(match["wins"], match["draws"], match["losses"], confidence)
            opponent = str(match["player_b"])
            base = 0.0 if opponent == RANDOM else rate(opponent, visiting | {model_id}).half_width
            result = Rating(float(row["elo"]), math.hypot(half, base), confidence, opponent)
        found[model_id] = result
        return result

    return {model_id: rate(model_id, frozenset()) for model_id in model_ids}
