"""The regression watchdog: rolls production back by itself when it clearly loses to its predecessor.

Gating on non-inferiority lets a model through that may be a little weaker than the one it
replaced; the watchdog bounds what that can cost. After every recorded match the
coordinator asks it about the config key's production model and its predecessor (the
model it replaced, the target of a rollback). All their head-to-head games, in either
seat order (the promotion match, the tournaments' pairings), are pooled; the production
model is rolled back when, over at least `evaluation.watchdog_min_games` games, even the
one-sided `watchdog_confidence` UPPER bound of its Elo difference (smoothed with
`rating_prior_games` virtual games, half won and half lost) is below
`-watchdog_bound_elo`: it is then clearly more than that far below its predecessor.
The rollback and its evidence are one decision (kind `watchdog`, outcome `rolled_back`)
in the transaction that rolls back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from zeroloop.config import EvaluationSettings
from zeroloop.pipeline.registry import Guard, ModelRegistry
from zeroloop.store.queries import models as model_queries
from zeroloop.store.queries import pipelines as queries
from zeroloop.workload.elo import elo_bounds

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """Whether to roll back, why, and the evidence (production's results against its predecessor)."""

    roll_back: bool
    reason: str
    evidence: dict[str, Any]


def judge(wins: int, draws: int, losses: int, settings: EvaluationSettings) -> Verdict:
    """Judge production's head-to-head record against its predecessor (games, from production's side)."""
    games = wins + draws + losses
    bound = settings.watchdog_bound_elo
    estimate = elo_bounds(wins, draws, losses, settings.watchdog_confidence, settings.rating_prior_games)
    evidence = {
        "wins": wins,
        "draws": draws,
        "losses": losses,
        "elo": estimate.elo,
        "elo_upper": estimate.high,
        "confidence": settings.watchdog_confidence,
        "bound_elo": bound,
    }
    said = (
        f"Elo {round(estimate.elo):+d} against its predecessor over {games} games, "
        f"{settings.watchdog_confidence:.0%} upper bound {round(estimate.high):+d}"
    )
    if games < settings.watchdog_min_games:
        return Verdict(
            False, f"only {games} games against its predecessor, need {settings.watchdog_min_games}", evidence
        )
    if estimate.high < -bound:
        return Verdict(True, f"loses to its predecessor by more than {bound:.0f} Elo: {said}", evidence)
    return Verdict(False, f"not clearly {bound:.0f} Elo below its predecessor: {said}", evidence)


class RegressionWatchdog:
    """Checks a config key's production model against its predecessor and rolls back a clear regression."""

    def __init__(
        self,
        registry: ModelRegistry,
        settings: EvaluationSettings,
        *,
        fence: Guard | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`fence` checks, inside the rollback's transaction, that this process still leads."""
        self.models = registry
        self.settings = settings
        self.fence = fence
        self.clock = clock
        self.rollbacks = 0

    def check(self, conn: Connection, config_key: str) -> Verdict | None:
        """Judge production against its predecessor in transaction `conn`; roll back if it clearly regressed.

        None when there is no pair to compare (no production model, or none before it).
        """
        production = model_queries.production_model(conn, config_key)
        predecessor = model_queries.previous_production(conn, config_key)
        if production is None or predecessor is None:
            return None
        wins = draws = losses = 0
        for match in model_queries.matches_between(conn, config_key, production["id"], predecessor["id"]):
            own = match["player_a"] == production["id"]
            wins += match["wins"] if own else match["losses"]
            draws += match["draws"]
            losses += match["losses"] if own else match["wins"]
        verdict = judge(wins, draws, losses, self.settings.for_key(config_key))
        if not verdict.roll_back:
            return verdict
        restored = self.models.rollback(config_key, guard=self.fence)
        evidence = {
            "model_id": production["id"],
            "restored_model_id": restored.id,
            "reason": verdict.reason,
            **verdict.evidence,
        }
        queries.insert_decision(
            conn, config_key=config_key, kind="watchdog", outcome="rolled_back", evidence=evidence, now=self.clock()
        )
        self.rollbacks += 1
        log.warning("%s: rolled %s back to %s: %s", config_key, production["id"], restored.id, verdict.reason)
        return verdict
