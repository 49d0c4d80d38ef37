"""How a model's rating reads on screen: one number, its interval, and what it is relative to.

The registry fits every rating of a config key jointly from all its matches whenever a
match is recorded (Bradley-Terry, random play anchored at 0: see
zeroloop.pipeline.bradley_terry) and stores the result. This module only reads that
stored fit, so every screen, the promotion record and the benchmark show the same
number: the Elo, and the interval from the fit's standard error at the confidence asked
for. A model no match has rated (or whose matches never reach random play) reads "not
rated", whatever its row holds (a new candidate starts with its parent's number).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from sqlalchemy import Connection

from zeroloop.store.queries import models as queries
from zeroloop.store.queries import pipelines as pipeline_queries
from zeroloop.workload.elo import elo_from_score

RELATIVE_TO = "random play = 0"
_ELO_PER_LOGIT = 400.0 / math.log(10.0)


@dataclass(frozen=True)
class Rating:
    """A model's rating in Elo points relative to random play, and the half-width of its interval."""

    elo: float | None
    half_width: float = math.inf
    confidence: float = 0.95
    games: float = 0.0  # games behind the fit (all its matches)
    opponents: int = 0  # distinct players it met

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


def of_record(record: dict[str, Any] | None, confidence: float) -> Rating:
    """The rating a stored fit record (`elo`, `stderr`, `games`, `opponents`) reads as."""
    if not record:
        return Rating(None, confidence=confidence)
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    return Rating(
        float(record["elo"]),
        z * float(record["stderr"]),
        confidence,
        float(record.get("games", 0.0)),
        int(record.get("opponents", 0)),
    )


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


def ratings(conn: Connection, model_ids: Iterable[str], confidence: float) -> dict[str, Rating]:
    """The stored joint rating of each model in `model_ids`, read in one transaction `conn`."""
    found: dict[str, Rating] = {}
    for model_id in model_ids:
        row = queries.get_model(conn, model_id)
        found[model_id] = of_record((row["meta"] or {}).get("rating") if row else None, confidence)
    return found


def baseline_ratings(conn: Connection, config_key: str, confidence: float) -> dict[str, Rating]:
    """The joint ratings of a config key's baselines other than the anchor (the MCTS player), by name."""
    state = pipeline_queries.get_pipeline(conn, config_key)
    stored = ((state["progress"] or {}).get("ratings") or {}) if state else {}
    return {name: of_record(record, confidence) for name, record in stored.items()}
