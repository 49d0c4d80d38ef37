"""Daemons over services other parts own: the event consumer runner, DLQ retry, retention, the reaper.

Those services already have the shape `async run()` until `stop()`; `ServiceDaemon`
adapts that shape to the daemon protocol (a stop event and a health check). Each
factory imports its service lazily, so the daemons package imports even where a part
is not installed or still incomplete; a factory that cannot import fails that daemon
(FAILED, with the import error as its reason), not the process.

A service whose run() ends with a failure of the moment (`is_transient`: the store
unreachable or locked) is not crashed: `ServiceDaemon` runs it again after a backoff
with jitter (doubling up to `daemons.outage_retry_max_s`) for as long as the outage
lasts, and reports DEGRADED meanwhile, as it does while the service says it is waiting
out an outage itself (its `outage_since`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from zeroloop.config import DaemonSettings
from zeroloop.daemons.daemon import Clock, DaemonContext, DaemonHealth, HealthState
from zeroloop.events.consumer import Fence, is_transient
from zeroloop.ports import AppParts

log = logging.getLogger(__name__)


class Service(Protocol):
    """Something with `async run()` that returns soon after `stop()`."""

    def run(self) -> Awaitable[None]:
        """Work until stop() is called."""

    def stop(self) -> None:
        """Ask run() to return."""


class ServiceDaemon:
    """Runs a `Service` as a daemon: stopping the daemon calls `service.stop()` and awaits its run()."""

    def __init__(
        self,
        service: Service,
        *,
        describe: Callable[[], dict[str, Any]] | None = None,
        clock: Clock = time.time,
        outage_retry_max_s: float | None = None,
    ) -> None:
        """`outage_retry_max_s`: the longest wait (seconds) before running the service again after a store outage.

        Unset, it is the `daemons.outage_retry_max_s` default.
        """
        self.service = service
        self.describe = describe or dict
        self.clock = clock
        self.outage_retry_max_s = (
            DaemonSettings().outage_retry_max_s if outage_retry_max_s is None else outage_retry_max_s
        )
        self.started_at: float | None = None
        self.outage_since: float | None = None
        self.outage_restarts = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Run the service until `stop` is set or it ends; a store outage reruns it, any other crash propagates."""
        self.started_at = self.clock()
        failures = 0
        while not stop.is_set():
            try:
                await self._run_once(stop)
                return
            except Exception as exc:
                if not is_transient(exc):
                    raise
                failures += 1
                self.outage_restarts += 1
                if self.outage_since is None:
                    self.outage_since = self.clock()
                name = type(self.service).__name__
                log.warning("%s: store unavailable, running it again after a backoff: %s", name, exc)
                delay = min(self.outage_retry_max_s, 0.1 * 2.0 ** min(failures, 30))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay / 2 + random.uniform(0, delay / 2))
                self.outage_since = None  # running again; the service reports its own outage from here

    async def _run_once(self, stop: asyncio.Event) -> None:
        work = asyncio.ensure_future(self.service.run())
        waiter = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({work, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
        if not work.done():
            self.service.stop()
        await work  # re-raises the service's crash, if it crashed

    def health(self) -> DaemonHealth:
        """Degraded while the service waits out a store outage, else healthy; details from its own counters."""
        details: dict[str, Any] = {"started_at": self.started_at, **self.describe()}
        since = getattr(self.service, "outage_since", None) or self.outage_since
        if since is not None:
            details["store_unavailable_since"] = since
            details["outage_restarts"] = self.outage_restarts
            return DaemonHealth(HealthState.DEGRADED, details)
        return DaemonHealth(HealthState.HEALTHY, details)


class _ReaperService:
    """The queue's Reaper takes a stop event; give it the run()/stop() shape.

    Each run (at start, and again after a store outage) first waits `grace_s` seconds:
    while the store was away no worker could heartbeat, so leases that ran out then say
    nothing about the workers, which renew them within a heartbeat of the store's return.
    """

    def __init__(self, reaper: Any, grace_s: float) -> None:
        self.reaper = reaper
        self.grace_s = grace_s
        self._stop = asyncio.Event()

    async def run(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), self.grace_s)
        await self.reaper.run(self._stop)

    def stop(self) -> None:
        self._stop.set()


def event_consumers_daemon(context: DaemonContext[AppParts]) -> ServiceDaemon:
    """Factory of `event_consumers`: zeroloop.events.runner.ConsumerRunner over the context's consumer specs."""
    from zeroloop.events.runner import ConsumerRunner

    app = context.parts
    runner = ConsumerRunner(app.bus, list(context.consumers), app.settings.events, clock=context.clock)
    return ServiceDaemon(
        runner,
        describe=lambda: {"consumers": len(context.consumers) + len(app.bus.subscriptions)},
        outage_retry_max_s=app.settings.daemons.outage_retry_max_s,
    )


def dlq_retry_daemon(context: DaemonContext[AppParts]) -> ServiceDaemon:
    """Factory of `dlq_retry`: zeroloop.events.deadletters.DeadLetterRetrier over the same consumer specs."""
    from zeroloop.events.deadletters import DeadLetterRetrier

    app = context.parts
    specs = [*context.consumers, *app.bus.subscriptions]
    retrier = DeadLetterRetrier(app.store, specs, app.settings.events, clock=context.clock)
    return ServiceDaemon(retrier, outage_retry_max_s=app.settings.daemons.outage_retry_max_s)


def event_retention_daemon(context: DaemonContext[AppParts]) -> ServiceDaemon:
    """Factory of `event_retention`: zeroloop.events.retention.Pruner."""
    from zeroloop.events.retention import Pruner

    app = context.parts
    return ServiceDaemon(
        Pruner(app.store, app.settings.events, clock=context.clock),
        outage_retry_max_s=app.settings.daemons.outage_retry_max_s,
    )


def queue_reaper_daemon(context: DaemonContext[AppParts]) -> ServiceDaemon:
    """Factory of `queue_reaper`: zeroloop.queue.reaper.Reaper over the App's JobQueue."""
    from zeroloop.queue.reaper import Reaper

    app = context.parts
    reaper = Reaper(app.queue, interval_s=app.settings.queue.reaper_interval_s, clock=context.clock)
    # A worker heartbeats every third of a lease, and retries at most outage_retry_max_s apart.
    grace_s = app.settings.queue.lease_s / 3 + app.settings.daemons.outage_retry_max_s
    return ServiceDaemon(
        _ReaperService(reaper, grace_s),
        describe=lambda: {"reaped": reaper.reaped},
        outage_retry_max_s=app.settings.daemons.outage_retry_max_s,
    )


class _ConsumersService:
    """A consumer runner and the dead-letter retrier of the same consumers, run and stopped together."""

    def __init__(self, runner: Any, retrier: Any) -> None:
        self.runner = runner
        self.retrier = retrier

    async def run(self) -> None:
        tasks = [asyncio.ensure_future(self.runner.run()), asyncio.ensure_future(self.retrier.run())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # re-raise a crash of either
        finally:
            self.stop()
            await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        self.runner.stop()
        self.retrier.stop()

    @property
    def outage_since(self) -> float | None:
        """When the runner or the retrier started waiting out a store outage (None: neither is)."""
        times = [t for t in (self.runner.outage_since, self.retrier.outage_since) if t is not None]
        return min(times) if times else None


def consumers_daemon(
    context: DaemonContext[AppParts],
    specs: Sequence[Any],
    *,
    describe: Callable[[], dict[str, Any]] | None = None,
    fence: Fence | None = None,
) -> ServiceDaemon:
    """A daemon that runs durable consumers and re-delivers their dead letters (for parts' own consumer sets).

    `fence` (the leader's lease guard) makes every write of both fenced: pass it for a leader-only daemon.
    """
    from zeroloop.events.deadletters import DeadLetterRetrier
    from zeroloop.events.runner import ConsumerRunner

    app = context.parts
    runner = ConsumerRunner(app.bus, list(specs), app.settings.events, clock=context.clock, fence=fence)
    retrier = DeadLetterRetrier(app.store, list(specs), app.settings.events, clock=context.clock, fence=fence)
    return ServiceDaemon(
        _ConsumersService(runner, retrier),
        describe=describe,
        outage_retry_max_s=app.settings.daemons.outage_retry_max_s,
    )
