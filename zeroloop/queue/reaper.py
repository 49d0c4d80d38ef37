"""The reaper: puts jobs whose lease expired back in the queue (or makes them dead).

A worker that dies holding a lease stops heartbeating; once the lease runs out the
reaper releases the job, counting the attempt, so the work is neither lost nor done
twice (the dead worker's token no longer completes it). Any number of reapers may run:
on PostgreSQL they skip each other's rows, on SQLite they take turns on the write lock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from zeroloop.queue.jobs import Job
from zeroloop.queue.manager import JobQueue

log = logging.getLogger(__name__)


class Reaper:
    """Releases expired leases every `interval_s` seconds; `run_once` does one pass (for tests and daemons)."""

    def __init__(self, queue: JobQueue, *, interval_s: float, clock: Callable[[], float] = time.time) -> None:
        self.queue = queue
        self.interval_s = interval_s
        self.clock = clock
        self.reaped = 0

    def run_once(self) -> list[Job]:
        """Release every job whose lease has expired by now; return those jobs as they are afterwards."""
        released: list[Job] = []
        # Bounded: each pass takes at most one batch per call, and at most 100 batches here.
        for _ in range(100):
            batch = self.queue.reap(self.clock())
            released.extend(batch)
            if not batch:
                break
        if released:
            log.info("reaper released %d job(s) with expired leases", len(released))
        self.reaped += len(released)
        return released

    async def run(self, stop: asyncio.Event) -> None:
        """Reap until `stop` is set; store work runs in a thread so the event loop never blocks."""
        while not stop.is_set():
            await asyncio.to_thread(self.run_once)
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
            except TimeoutError:
                continue
