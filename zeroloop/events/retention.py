"""Retention of the event log: prune by age and count, never what a consumer still needs.

An event is pruned when it is older than `retention_max_age_s` or not among the newest
`retention_max_count`, and only if every durable consumer's cursor is past it and no
live dead letter refers to it. The newest event is always kept (SQLite would reuse its
id otherwise, and a cursor pointing at it would then skip the new event).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from zeroloop.config import EventSettings
from zeroloop.events.deadletters import LIVE
from zeroloop.store.database import Store
from zeroloop.store.queries import consumers as consumer_queries
from zeroloop.store.queries import dead_letters as letter_queries
from zeroloop.store.queries import events as queries

Clock = Callable[[], float]


def prune(store: Store, settings: EventSettings, *, clock: Clock = time.time) -> int:
    """Delete the events retention allows to go; return how many were deleted."""
    with store.transaction() as conn:
        return queries.prune(
            conn,
            older_than=clock() - settings.retention_max_age_s,
            keep_count=settings.retention_max_count,
            processed_up_to=consumer_queries.slowest_cursor(conn),
            keep_ids=letter_queries.pending_event_ids(conn, statuses=list(LIVE)),
        )


class Pruner:
    """The retention daemon loop: `run_once()` prunes once, `run()` every retention_interval_s until stop()."""

    def __init__(self, store: Store, settings: EventSettings, *, clock: Clock = time.time) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self._stop = asyncio.Event()

    async def run_once(self) -> int:
        """Prune once, off the event loop; return how many events were deleted."""
        return await asyncio.to_thread(prune, self.store, self.settings, clock=self.clock)

    async def run(self) -> None:
        """Prune every retention_interval_s seconds until stop()."""
        while not self._stop.is_set():
            await self.run_once()
            try:
                await asyncio.wait_for(self._stop.wait(), self.settings.retention_interval_s)
            except TimeoutError:
                continue

    def stop(self) -> None:
        """Ask run() to return."""
        self._stop.set()
