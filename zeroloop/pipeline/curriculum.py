"""Curriculum across configs from Elo velocity, and plateau detection that moves the budget.

Both read the joint rating (zeroloop.pipeline.bradley_terry) of each config's production
models over time. The production model at time t is the model promoted last before t
(a rollback re-promotes, so the timeline stays right); before the first promotion it is
random play, Elo 0.

- Elo velocity: production's rating now minus production's rating
  `evaluation.velocity_window_s` ago, per hour. The selfplay scheduler's weight has a
  velocity term (zeroloop.pipeline.scheduler): a config improving fast gets more of the
  shared workers, and this is the number it uses.
- Plateau: a config is on a plateau when, over `plateau_window_s`, at least
  `plateau_min_rounds` candidates were judged and production gained less than
  `plateau_min_gain_elo`. More selfplay does not pay there as it does elsewhere: its
  weight is multiplied by `plateau_weight` until it gains again.

`Curriculum.tick` (the leader, every `evaluation.feedback_interval_s`) stores each
config's velocity, plateau flag and weight factor in `progress.curriculum`, and records
a decision when something changed: `plateau`/`detected` or `plateau`/`cleared` with the
gain, the rounds and the window; `curriculum`/`reweighted` when a config's share of the
selfplay budget moved by more than 0.1, with every config's velocity and share.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from zeroloop.config import Settings
from zeroloop.events.bus import EventBus
from zeroloop.events.wiring import declare
from zeroloop.store.database import Store
from zeroloop.store.queries import models as model_queries
from zeroloop.store.queries import pipelines as queries

log = logging.getLogger(__name__)
declare("zeroloop.pipeline.curriculum", emits=("PLATEAU_CHANGED",))

SHARE_CHANGE = 0.1  # a move of a config's selfplay share that is recorded as a decision


def production_rating_at(promoted: list[tuple[float, float]], at: float) -> float:
    """Production's current joint rating at time `at`, from (promoted_at, Elo) pairs; 0 (random play) before any."""
    rating = 0.0
    for promoted_at, elo in sorted(promoted):
        if promoted_at > at:
            break
        rating = elo
    return rating


def promotions(conn: Connection, config_key: str) -> list[tuple[float, float]]:
    """(promoted_at, joint Elo) of every rated model of a config key that was ever production."""
    found = []
    for row in model_queries.list_models(conn, config_key=config_key, limit=100_000):
        if row["promoted_at"] is not None and (row["meta"] or {}).get("rating"):
            found.append((float(row["promoted_at"]), float(row["elo"])))
    return found


def weight_of_velocity(elo_per_h: float) -> float:
    """The selfplay scheduler's velocity term: Elo gained per hour / 100, clamped to 0..1."""
    return min(1.0, max(0.0, elo_per_h / 100.0))


def velocity(promoted: list[tuple[float, float]], now: float, window_s: float) -> float:
    """Production's Elo gain per hour over the last `window_s` seconds."""
    gain = production_rating_at(promoted, now) - production_rating_at(promoted, now - window_s)
    return gain * 3600.0 / window_s


@dataclass(frozen=True)
class Plateau:
    """Whether a config is on a plateau, and the figures that say so (Elo, rounds, seconds)."""

    flat: bool
    gain_elo: float
    rounds: int
    window_s: float

    def reason(self, min_gain: float) -> str:
        """The verdict in words."""
        head = "on a plateau" if self.flat else "improving"
        return (
            f"{head}: production gained {self.gain_elo:+.0f} Elo over {self.window_s / 3600:.1f} h "
            f"and {self.rounds} rounds (a plateau is under {min_gain:.0f} Elo)"
        )


class Curriculum:
    """Computes velocity, plateau and selfplay weight factor per config; run it on the leader only."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        fence: Callable[[Connection], None] | None = None,
        bus: EventBus | None = None,
    ) -> None:
        """`fence(conn)` refuses the tick's writes unless this process still leads; `bus` announces plateaus."""
        self.bus = bus
        self.store = store
        self.settings = settings.evaluation
        self.clock = clock
        self.fence = fence

    def plateau(self, conn: Connection, config_key: str, promoted: list[tuple[float, float]], now: float) -> Plateau:
        """Judge the plateau of one config key at `now`."""
        window = self.settings.plateau_window_s
        gain = production_rating_at(promoted, now) - production_rating_at(promoted, now - window)
        rounds = sum(
            1
            for row in queries.list_decisions(conn, config_key, limit=1000)
            if row["kind"] == "promotion" and float(row["created_at"]) >= now - window
        )
        flat = rounds >= self.settings.plateau_min_rounds and gain < self.settings.plateau_min_gain_elo
        return Plateau(flat, gain, rounds, window)

    def tick(self) -> dict[str, dict[str, Any]]:
        """Update every pipeline's curriculum record and record what changed; return the records by config key."""
        now = self.clock()
        records: dict[str, dict[str, Any]] = {}
        with self.store.transaction() as conn:
            if self.fence is not None:
                self.fence(conn)
            states = [state for state in queries.list_pipelines(conn) if not state["paused"]]
            before: dict[str, dict[str, Any]] = {}
            for state in states:
                key = state["config_key"]
                before[key] = ((state["progress"] or {}).get("curriculum")) or {}
                promoted = promotions(conn, key)
                plateau = self.plateau(conn, key, promoted, now)
                speed = velocity(promoted, now, self.settings.velocity_window_s)
                factor = self.settings.plateau_weight if plateau.flat else 1.0
                records[key] = {
                    "velocity_elo_per_h": speed,
                    "plateau": plateau.flat,
                    "weight_factor": factor,
                    "weight": factor * (1.0 + weight_of_velocity(speed)),
                    "at": now,
                }
                if plateau.flat != bool(before[key].get("plateau", False)):
                    if self.bus is not None:  # the decision and its alert commit together
                        self.bus.publish(
                            "PLATEAU_CHANGED",
                            {
                                "config_key": key,
                                "plateau": plateau.flat,
                                "gain_elo": plateau.gain_elo if math.isfinite(plateau.gain_elo) else None,
                                "rounds": plateau.rounds,
                                "reason": plateau.reason(self.settings.plateau_min_gain_elo),
                            },
                        )
                    queries.insert_decision(
                        conn,
                        config_key=key,
                        kind="plateau",
                        outcome="detected" if plateau.flat else "cleared",
                        evidence={
                            "gain_elo": plateau.gain_elo,
                            "rounds": plateau.rounds,
                            "window_s": plateau.window_s,
                            "weight_factor": factor,
                            "reason": plateau.reason(self.settings.plateau_min_gain_elo)
                            + (f"; its selfplay share is multiplied by {factor:g}" if plateau.flat else ""),
                        },
                        now=now,
                    )
            self._reweigh(conn, records, before, now)
            for key, record in records.items():
                queries.merge_progress(conn, key, {"curriculum": record}, now)
        return records

    def _reweigh(
        self, conn: Connection, records: dict[str, dict[str, Any]], before: dict[str, dict[str, Any]], now: float
    ) -> None:
        """Record a `curriculum` decision for each config whose share of the weights moved by more than SHARE_CHANGE."""
        total = sum(record["weight"] for record in records.values()) or 1.0
        shares = {key: record["weight"] / total for key, record in records.items()}
        for key, record in records.items():
            record["share"] = shares[key]
            previous = before[key].get("share")
            if previous is not None and abs(shares[key] - float(previous)) <= SHARE_CHANGE:
                continue
            evidence = {
                "share": shares[key],
                "previous_share": previous,
                "velocity_elo_per_h": {k: r["velocity_elo_per_h"] for k, r in records.items()},
                "shares": shares,
                "reason": f"Elo velocity {record['velocity_elo_per_h']:+.0f}/h"
                + (", on a plateau" if record["plateau"] else "")
                + f": {shares[key]:.0%} of the curriculum weight",
            }
            queries.insert_decision(
                conn, config_key=key, kind="curriculum", outcome="reweighted", evidence=evidence, now=now
            )
