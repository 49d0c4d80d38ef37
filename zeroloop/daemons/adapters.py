"""Daemons over services other parts own: the event consumer runner, DLQ retry, retention, the reaper.

Those services already have the shape `async run()` until `stop()`; `ServiceDaemon`
adapts that shape to the daemon protocol (a stop event and a health check). Each
factory imports its service lazily, so the daemons package imports even where a part
is not installed or still incomplete; a factory that cannot import fails that daemon
(FAILED, with the import error as its reason), not the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from zeroloop.daemons.daemon import Clock, DaemonContext, DaemonHealth, HealthState


class Service(Protocol):
    """Something with `async run()` that returns soon after `stop()`."""

    def run(self) -> Awaitable[None]:
        """Work until stop() is called."""

    def stop(self) -> None:
        """Ask run() to return."""


class ServiceDaemon:
    """Runs a `Service` as a daemon: stopping the daemon calls `service.stop()` and awaits its run()."""

    def __init__(
        self, service: Service, *, describe: Callable[[], dict[str, Any]] | None = None, clock: Clock = time.time
    ) -> None:
        self.service = service
        self.describe = describe or dict
        self.clock = clock
        self.started_at: float | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Run the service until `stop` is set or the service ends (a crash propagates)."""
        self.started_at = self.clock()
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
        """Healthy while running; details from the service's own counters."""
        details = {"started_at": self.started_at, **self.describe()}
        return DaemonHealth(HealthState.HEALTHY, details)


class _ReaperService:
    """The queue's Reaper takes a stop event; give it the run()/stop() shape."""

    def __init__(self, reaper: Any) -> None:
        self.reaper = reaper
        self._stop = asyncio.Event()

    async def run(self) -> None:
        await self.reaper.run(self._stop)

    def stop(self) -> None:
        self._stop.set()


def event_consumers_daemon(context: DaemonContext) -> ServiceDaemon:
    """Factory of `event_consumers`: zeroloop.events.runner.ConsumerRunner over the context's consumer specs."""
    from zeroloop.events.runner import ConsumerRunner

    app = context.app
    runner = ConsumerRunner(app.bus, list(context.consumers), app.settings.events, clock=context.clock)
    return ServiceDaemon(runner, describe=lambda: {"consumers": len(context.consumers) + len(app.bus.subscriptions)})


def dlq_retry_daemon(context: DaemonContext) -> ServiceDaemon:
    """Factory of `dlq_retry`: zeroloop.events.deadletters.DeadLetterRetrier over the same consumer specs."""
    from zeroloop.events.deadletters import DeadLetterRetrier

    app = context.app
    specs = [*context.consumers, *app.bus.subscriptions]
    retrier = DeadLetterRetrier(app.store, specs, app.settings.events, clock=context.clock)
    return ServiceDaemon(retrier)


def event_retention_daemon(context: DaemonContext) -> ServiceDaemon:
    """Factory of `event_retention`: zeroloop.events.retention.Pruner."""
    from zeroloop.events.retention import Pruner

    app = context.app
    return ServiceDaemon(Pruner(app.store, app.settings.events, clock=context.clock))


def queue_reaper_daemon(context: DaemonContext) -> ServiceDaemon:
    """Factory of `queue_reaper`: zeroloop.queue.reaper.Reaper over the App's JobQueue."""
    from zeroloop.queue.reaper import Reaper

    app = context.app
    reaper = Reaper(app.queue, interval_s=app.settings.queue.reaper_interval_s, clock=context.clock)
    return ServiceDaemon(_ReaperService(reaper), describe=lambda: {"reaped": reaper.reaped})


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


def consumers_daemon(
    context: DaemonContext, specs: Sequence[Any], *, describe: Callable[[], dict[str, Any]] | None = None
) -> ServiceDaemon:
    """A daemon that runs durable consumers and re-delivers their dead letters (for parts' own consumer sets)."""
    from zeroloop.events.deadletters import DeadLetterRetrier
    from zeroloop.events.runner import ConsumerRunner

    app = context.app
    runner = ConsumerRunner(app.bus, list(specs), app.settings.events, clock=context.clock)
    retrier = DeadLetterRetrier(app.store, list(specs), app.settings.events, clock=context.clock)
    return ServiceDaemon(_ConsumersService(runner, retrier), describe=describe)
