"""Tournaments: a scheduled round robin of recent models and the baselines that feeds the joint rating.

The candidates' own matches rate each model against its parent and the baselines only
once, when it is new. Every `evaluation.tournament_interval_s` per config key (run on the
leader, from the selfplay scheduler's tick), the `evaluation.tournament_models` most
recently promoted models (production first, then the archived ones by promotion time)
play each other, and each plays every baseline of `pipeline.baselines`, in
`evaluation.tournament_games` games per pairing. The pairings are ordinary `evaluate`
jobs with `purpose = "tournament"`: workers run them like any match, the coordinator
records their results (which refits every rating and lets the regression watchdog look
at production against its predecessor), and no round waits for them or ends with them.
The baselines are not paired with each other (an evaluate job plays a model).

Each tournament gets the next number in the pipeline's progress record
(`progress.tournament`: number, time, pairings) and a `tournament`/`scheduled` decision
naming its players. Seeds differ per tournament and pairing, so repeated pairings are
fresh games. Nothing is scheduled while the pipeline is paused, the evaluation circuit is
open, or evaluation backpressure is HARD or above (tried again on the next tick). With a
`fence` the tick's jobs are enqueued in one transaction the fence opens.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Connection

from zeroloop.cluster.breakers import CircuitBreakers, stage_key
from zeroloop.config import Settings
from zeroloop.pipeline import jobs
from zeroloop.queue.backpressure import BackpressureLevel
from zeroloop.queue.manager import JobQueue
from zeroloop.store.database import Store
from zeroloop.store.queries import models as model_queries
from zeroloop.store.queries import pipelines as queries

log = logging.getLogger(__name__)

PRIORITY = 40  # above selfplay (10), below a round's export, training and evaluation (50-70)


def seed_for(config_key: str, number: int, first: str, second: str) -> int:
    """A seed that differs per config key, tournament and pairing (and is the same wherever computed)."""
    digest = hashlib.sha256(f"{config_key}:{number}:{first}:{second}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def recent_models(conn: Connection, config_key: str, count: int) -> list[Any]:
    """The `count` most recently promoted models still standing: production first, then archived, newest first."""
    rows = [
        row
        for row in model_queries.list_models(conn, config_key=config_key, limit=100_000)
        if row["stage"] in ("production", "archived") and row["promoted_at"] is not None
    ]
    rows.sort(key=lambda row: (row["stage"] != "production", -float(row["promoted_at"])))
    return rows[:count]


class TournamentScheduler:
    """Enqueues each config key's round robin when it is due; run it on the leader only."""

    def __init__(
        self,
        store: Store,
        queue: JobQueue,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        fence: Callable[[Connection], None] | None = None,
        breakers: CircuitBreakers | None = None,
    ) -> None:
        """`fence(conn)` refuses the tick's enqueues unless this process still leads; `breakers` may hold them back."""
        self.store = store
        self.queue = queue
        self.settings = settings.evaluation
        self.baselines = list(settings.pipeline.baselines)
        self.clock = clock
        self.fence = fence
        self.breakers = breakers
        self.scheduled = 0  # tournaments scheduled by this process

    def tick(self) -> dict[str, int]:
        """Schedule every due tournament; return the pairings enqueued per config key."""
        if self.settings.tournament_interval_s <= 0:
            return {}
        if self.breakers is not None and not self.breakers.allow(stage_key(jobs.EVALUATE)):
            return {}
        if self.queue.check_backpressure(jobs.EVALUATE) >= BackpressureLevel.HARD:
            return {}
        added: dict[str, int] = {}
        now = self.clock()
        with self.store.transaction() as conn:
            if self.fence is not None:
                self.fence(conn)
            for state in queries.list_pipelines(conn):
                if state["paused"]:
                    continue
                last = ((state["progress"] or {}).get("tournament")) or {}
                if last and now - float(last["at"]) < self.settings.tournament_interval_s:
                    continue
                pairings = self._schedule(conn, state["config_key"], int(last.get("number", 0)) + 1, now)
                if pairings:
                    added[state["config_key"]] = pairings
        return added

    def _schedule(self, conn: Connection, config_key: str, number: int, now: float) -> int:
        """Enqueue tournament `number` of a config key; 0 (nothing recorded) with fewer than two models."""
        models = recent_models(conn, config_key, self.settings.tournament_models)
        if len(models) < 2:
            return 0
        pairings: list[tuple[Any, str, Any]] = []
        for i, first in enumerate(models):
            pairings.extend((first, second["id"], second) for second in models[i + 1 :])
            pairings.extend((first, baseline, None) for baseline in self.baselines)
        for first, opponent, second in pairings:
            payload = jobs.EvaluateJob(
                iteration=number,
                model_id=first["id"],
                model_sha256=first["artifact_sha256"],
                opponent=opponent,
                opponent_kind="model" if second is not None else jobs.baseline_opponent(opponent),
                opponent_sha256=second["artifact_sha256"] if second is not None else None,
                games=self.settings.tournament_games,
                seed=seed_for(config_key, number, first["id"], opponent),
                purpose="tournament",
            )
            self.queue.enqueue(
                jobs.EVALUATE,
                config_key,
                payload.model_dump(),
                priority=PRIORITY,
                idempotency_key=f"{config_key}:tournament:{number}:{first['id']}:{opponent}",
            )
        players = [model["id"] for model in models] + self.baselines
        record = {"number": number, "at": now, "pairings": len(pairings)}
        queries.merge_progress(conn, config_key, {"tournament": record}, now)
        queries.insert_decision(
            conn,
            config_key=config_key,
            kind="tournament",
            outcome="scheduled",
            evidence={
                **record,
                "players": players,
                "games_per_pairing": self.settings.tournament_games,
                "reason": f"round robin {number}: {len(pairings)} pairings of {', '.join(players)}",
            },
            now=now,
        )
        self.scheduled += 1
        log.info("%s: tournament %d scheduled, %d pairings", config_key, number, len(pairings))
        return len(pairings)
