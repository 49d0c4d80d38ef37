"""The `tune` daemon (leader): each running tune's step every `tune.interval_s`, and the distillation consumer.

One daemon runs both: a loop over `Population.tick()` (zeroloop.tune.population) in a
worker thread, and the `tune_distill` durable consumer (zeroloop.tune.distill) with its
dead-letter retrier. Every write of either is fenced by the leader lease. A tune's step
that fails (a model file that cannot be written, a store error) is logged and counted,
and the next tick tries again; it never ends the other tunes' steps.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from zeroloop.cluster.leases import leader_fence
from zeroloop.daemons.adapters import ServiceDaemon, consumers_daemon
from zeroloop.daemons.daemon import DaemonContext, DaemonHealth, HealthState, LoopDaemon
from zeroloop.events.wiring import declare
from zeroloop.ports import AppParts
from zeroloop.tune.distill import DistillRecorder
from zeroloop.tune.population import Population

log = logging.getLogger(__name__)

declare("zeroloop.tune.population", emits=("PIPELINE_PAUSED", "PIPELINE_RESUMED"))


class TuneLoop(LoopDaemon):
    """Every `tune.interval_s`: one step of every running tune."""

    def __init__(self, context: DaemonContext[AppParts]) -> None:
        app = context.parts
        super().__init__(
            app.settings.tune.interval_s,
            clock=context.clock,
            outage_retry_max_s=app.settings.daemons.outage_retry_max_s,
        )
        self.population = Population(app, fence=leader_fence(app.leases, context.leadership), clock=context.clock)
        self.steps = 0
        self.last: dict[int, list[str]] = {}

    async def tick(self) -> None:
        """One step of every running tune, in a thread (it writes model files and reads the store)."""
        self.last = await asyncio.to_thread(self.population.tick)
        self.steps += len(self.last)

    def details(self) -> dict[str, Any]:
        """Tune steps taken, and what the last tick did per tune."""
        return {"steps": self.steps, "last": {str(k): v for k, v in self.last.items()}}


class TuneDaemon:
    """The tune loop and the distillation consumer, run and stopped together."""

    def __init__(self, loop: TuneLoop, consumers: ServiceDaemon) -> None:
        self.loop = loop
        self.consumers = consumers

    async def run(self, stop: asyncio.Event) -> None:
        """Run both until `stop`; a crash of either stops the other and is raised (the manager restarts the daemon)."""
        inner = asyncio.Event()
        relay = asyncio.ensure_future(stop.wait())
        tasks = [asyncio.ensure_future(self.loop.run(inner)), asyncio.ensure_future(self.consumers.run(inner))]
        try:
            done, _ = await asyncio.wait([*tasks, relay], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not relay:
                    task.result()
        finally:
            inner.set()
            relay.cancel()
            await asyncio.gather(*tasks, relay, return_exceptions=True)

    def health(self) -> DaemonHealth:
        """The worse of the two, with both's details."""
        loop, consumers = self.loop.health(), self.consumers.health()
        worst = max((loop, consumers), key=lambda h: list(HealthState).index(h.state))
        return DaemonHealth(worst.state, {"loop": loop.details, "distill": consumers.details})


def tune_daemon(context: DaemonContext[AppParts]) -> TuneDaemon:
    """Factory of `tune`."""
    app = context.parts
    fence = leader_fence(app.leases, context.leadership)
    recorder = DistillRecorder(app.store, app.queue, app.models, app.settings, clock=context.clock)
    return TuneDaemon(TuneLoop(context), consumers_daemon(context, [recorder.spec()], fence=fence))
