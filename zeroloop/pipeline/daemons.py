"""The pipeline's daemons and their specs, declared in `zeroloop.app.daemon_table`.

| daemon | where | what |
| --- | --- | --- |
| pipeline | leader | runs the coordinator and the progress recorder (durable consumers) |
| selfplay_scheduler | leader | tops up selfplay jobs; the health pause rule; tournaments; quality monitor, curriculum |
| job_executor | training_node, ephemeral | claims and runs every pipeline job type in a child process |
| selfplay_executor | selfplay | the same, for selfplay jobs only |
| model_distribution | workers | fetches each newly promoted model into the node's cache |
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from zeroloop.cluster.agent import describe_node, node_load
from zeroloop.cluster.leases import leader_fence
from zeroloop.daemons.adapters import ServiceDaemon, consumers_daemon
from zeroloop.daemons.daemon import DaemonContext, LoopDaemon
from zeroloop.events.wiring import declare
from zeroloop.pipeline import jobs
from zeroloop.pipeline.coordinator import PipelineCoordinator
from zeroloop.pipeline.curriculum import Curriculum
from zeroloop.pipeline.executor import JobExecutor
from zeroloop.pipeline.progress import ProgressRecorder
from zeroloop.pipeline.quality import SelfplayQualityMonitor
from zeroloop.pipeline.scheduler import SelfplayScheduler
from zeroloop.pipeline.slots import SlotBudget, Slots
from zeroloop.pipeline.tournament import TournamentScheduler
from zeroloop.ports import AppParts, WorkerParts
from zeroloop.queue.backpressure import NodePressure, psutil_reader
from zeroloop.queue.jobs import Capabilities
from zeroloop.store.queries import pipelines as queries

log = logging.getLogger(__name__)

declare("zeroloop.pipeline.scheduler", emits=("PIPELINE_PAUSED", "PIPELINE_RESUMED"))

HEALTH_PAUSE = "system health"


def pipeline_daemon(context: DaemonContext[AppParts]) -> ServiceDaemon:
    """Factory of `pipeline`: the coordinator and progress recorder as one consumer runner."""
    app = context.parts
    fence = leader_fence(app.leases, context.leadership)
    coordinator = PipelineCoordinator(
        app.store,
        app.bus,
        app.queue,
        app.models,
        app.settings,
        fence=fence,
        clock=context.clock,
        breakers=app.breakers,
    )
    recorder = ProgressRecorder(app.store, clock=context.clock)
    return consumers_daemon(context, [coordinator.spec(), recorder.spec()], fence=fence)


class SchedulerDaemon(LoopDaemon):
    """Each tick: apply the health pause rule to every pipeline, top up selfplay jobs, schedule due tournaments.

    Every `evaluation.feedback_interval_s` it also runs the selfplay quality monitor and the
    curriculum (velocity, plateau), which record their own decisions.
    """

    def __init__(self, context: DaemonContext[AppParts]) -> None:
        app = context.parts
        super().__init__(app.settings.pipeline.scheduler_interval_s, clock=context.clock)
        self.app = app
        self.fence = leader_fence(app.leases, context.leadership)
        self.scheduler = SelfplayScheduler(
            app.store, app.queue, app.settings, clock=context.clock, fence=self.fence, breakers=app.breakers
        )
        self.tournaments = TournamentScheduler(
            app.store, app.queue, app.settings, clock=context.clock, fence=self.fence, breakers=app.breakers
        )
        self.quality = SelfplayQualityMonitor(
            app.store, app.settings, clock=context.clock, fence=self.fence, bus=app.bus
        )
        self.curriculum = Curriculum(app.store, app.settings, clock=context.clock, fence=self.fence, bus=app.bus)
        self.feedback_at: float | None = None  # when the quality monitor and the curriculum last ran (clock time)

    async def tick(self) -> None:
        """One round: pause or resume by health, then schedule selfplay and tournaments."""
        await asyncio.to_thread(self.apply_pause, self.app.health.paused)
        await asyncio.to_thread(self.scheduler.tick)
        await asyncio.to_thread(self.tournaments.tick)
        now = self.clock()
        if self.feedback_at is None or now - self.feedback_at >= self.app.settings.evaluation.feedback_interval_s:
            self.feedback_at = now
            await asyncio.to_thread(self.curriculum.tick)
            await asyncio.to_thread(self.quality.tick)

    def apply_pause(self, paused: bool) -> None:
        """Pause every running pipeline when health says so; resume those it paused when it recovers."""
        with self.app.store.read() as conn:
            states = queries.list_pipelines(conn)
        if not any(_pause_changes(state, paused) for state in states):
            return  # the usual tick: a read, not a write turn
        now = self.clock()
        with self.app.store.transaction() as conn:
            self.fence(conn)
            for state in queries.list_pipelines(conn):
                key = state["config_key"]
                if paused and not state["paused"]:
                    queries.update_pipeline(conn, key, now, paused=True, pause_reason=HEALTH_PAUSE)
                    self.app.bus.publish("PIPELINE_PAUSED", {"config_key": key, "reason": HEALTH_PAUSE})
                elif not paused and state["paused"] and state["pause_reason"] == HEALTH_PAUSE:
                    queries.update_pipeline(conn, key, now, paused=False, pause_reason=None)
                    self.app.bus.publish("PIPELINE_RESUMED", {"config_key": key, "reason": "system health recovered"})

    def details(self) -> dict[str, Any]:
        """Jobs enqueued so far, ticks held back by the selfplay circuit breaker, tournaments scheduled."""
        return {
            "enqueued": self.scheduler.enqueued,
            "held_back": self.scheduler.held_back,
            "tournaments": self.tournaments.scheduled,
        }


def _pause_changes(state: Any, paused: bool) -> bool:
    """Whether the health pause rule changes this pipeline: pause a running one, or resume one it paused."""
    if paused:
        return not state["paused"]
    return bool(state["paused"]) and state["pause_reason"] == HEALTH_PAUSE


def scheduler_daemon(context: DaemonContext[AppParts]) -> SchedulerDaemon:
    """Factory of `selfplay_scheduler`."""
    return SchedulerDaemon(context)


def executor_daemon(context: DaemonContext[WorkerParts]) -> ServiceDaemon:
    """Factory of `job_executor`: runs every type of pipeline job."""
    return _executor(context, jobs.JOB_TYPES)


def selfplay_executor_daemon(context: DaemonContext[WorkerParts]) -> ServiceDaemon:
    """Factory of `selfplay_executor`: runs selfplay jobs only."""
    return _executor(context, jobs.types_for("selfplay"))


def _executor(context: DaemonContext[WorkerParts], job_types: tuple[str, ...]) -> ServiceDaemon:
    app = context.parts
    info = describe_node(app.settings)
    cluster = app.settings.cluster
    slots = max(1, info.slots)
    labels = frozenset(cluster.labels)
    # One reading of this node's memory and disk for all its slots: past a hard limit it claims no selfplay.
    pressure = NodePressure(
        app.settings.queue, psutil_reader(app.settings.disk_paths), producers=frozenset({jobs.SELFPLAY})
    )

    def make(budget: SlotBudget | None = None) -> JobExecutor:
        return JobExecutor(
            app.models,
            app.bus,
            app.queue,
            app.artifacts,
            app.settings,
            node=cluster.node_id,
            capabilities=Capabilities(gpus=len(info.gpus), memory_bytes=info.memory_bytes, labels=labels),
            job_types=job_types,
            clock=context.clock,
            budget=budget,
            pressure=pressure,
        )

    if slots == 1 and not cluster.max_jobs_per_type:
        executor = make()
        return ServiceDaemon(executor, describe=executor.health)
    # The slots share the node: each claim asks for the GPUs and memory the others left free.
    budget = SlotBudget(
        gpus=len(info.gpus), memory_bytes=info.memory_bytes, labels=labels, max_per_type=cluster.max_jobs_per_type
    )
    service = Slots(
        lambda: make(budget),
        slots,
        target_pct=cluster.utilisation_target_pct,
        probe=lambda: node_load(app.settings),
        interval_s=cluster.slot_interval_s,
    )
    return ServiceDaemon(service, describe=service.health)
