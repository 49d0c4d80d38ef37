"""The alerts no single event carries: a pipeline that stopped promoting, dead letters piling up.

The `alert_checks` daemon (leader only) looks every `alerts.check_interval_s` seconds:

- a running (not paused) pipeline whose last promotion is older than
  `alerts.no_promotion_hours` gets one PROMOTION_STALLED per stall (its dedup key names
  the promotion it is measured from, so the next stall after a promotion is news again).
  A pipeline that never promoted is measured from when this daemon first saw it; after
  a failover the new leader starts that count afresh;
- more event dead letters pending or parked than at the previous look publishes
  DEAD_LETTERS_GROWING (the webhooks' deduplication keeps that to one message an hour).

The alerts consumer turns both into alerts of the `no_promotion` and `dead_letters` rules.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from zeroloop.cluster.leases import Fence, leader_fence
from zeroloop.config import AlertSettings
from zeroloop.daemons.daemon import Clock, DaemonContext, LoopDaemon
from zeroloop.events.bus import EventBus
from zeroloop.events.deadletters import LIVE
from zeroloop.events.wiring import declare
from zeroloop.ports import AppParts
from zeroloop.store.database import Store
from zeroloop.store.queries import dead_letters as letter_queries
from zeroloop.store.queries import pipelines as pipeline_queries

_HOUR_S = 3600.0
declare("zeroloop.alerts.checks", emits=("PROMOTION_STALLED", "DEAD_LETTERS_GROWING"))


class AlertChecks:
    """Looks for stalled pipelines and growing dead letters, and publishes what it finds (clock: epoch seconds)."""

    def __init__(
        self,
        store: Store,
        bus: EventBus,
        settings: AlertSettings,
        *,
        clock: Callable[[], float] = time.time,
        fence: Fence | None = None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.settings = settings
        self.clock = clock
        self.fence = fence
        self.first_seen: dict[str, float] = {}
        self.announced: dict[str, float] = {}  # config key -> the promotion time its stall was announced for
        self.letters: int | None = None

    def check(self) -> list[str]:
        """One look; the types of the events it published."""
        now = self.clock()
        live = {status.value for status in LIVE}
        with self.store.read() as conn:
            rows = [dict(row) for row in pipeline_queries.list_pipelines(conn)]
            letters = sum(count for status, count in letter_queries.count_by_status(conn).items() if status in live)
        published = []
        limit_h = self.settings.no_promotion_hours
        for row in rows:
            key = row["config_key"]
            since = row["last_promotion_at"] or self.first_seen.setdefault(key, now)
            if limit_h is None or row["paused"] or now - since < limit_h * _HOUR_S or self.announced.get(key) == since:
                continue
            payload = {
                "config_key": key,
                "hours": (now - since) / _HOUR_S,
                "last_promotion_at": row["last_promotion_at"],
                "model_id": row["current_model_id"],
            }
            self._publish("PROMOTION_STALLED", payload, f"promotion-stalled:{key}:{since!r}")
            self.announced[key] = since
            published.append("PROMOTION_STALLED")
        previous, self.letters = self.letters, letters
        if previous is not None and letters > previous:
            self._publish("DEAD_LETTERS_GROWING", {"letters": letters, "previous": previous}, None)
            published.append("DEAD_LETTERS_GROWING")
        return published

    def _publish(self, event_type: str, payload: dict[str, Any], dedup_key: str | None) -> None:
        with self.store.transaction() as conn:
            if self.fence is not None:
                self.fence(conn)  # a deposed leader announces nothing
            self.bus.publish(event_type, payload, dedup_key=dedup_key)


class AlertChecksDaemon(LoopDaemon):
    """Runs `AlertChecks` every interval."""

    def __init__(self, checks: AlertChecks, interval_s: float, *, clock: Clock) -> None:
        super().__init__(interval_s, clock=clock)
        self.checks = checks
        self.found = 0

    async def tick(self) -> None:
        """One look."""
        self.found += len(await asyncio.to_thread(self.checks.check))

    def details(self) -> dict[str, Any]:
        """How many stall and growth events this daemon published."""
        return {"published": self.found, "dead_letters": self.checks.letters}


def alert_checks_daemon(context: DaemonContext[AppParts]) -> AlertChecksDaemon:
    """Factory of the `alert_checks` daemon."""
    app = context.parts
    settings = app.settings.alerts
    fence = leader_fence(app.leases, context.leadership)
    checks = AlertChecks(app.store, app.bus, settings, clock=context.clock, fence=fence)
    return AlertChecksDaemon(checks, settings.check_interval_s, clock=context.clock)
