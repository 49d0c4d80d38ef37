"""One trace runs through a whole round: selfplay job, game batch, export, training, evaluation, promotion.

The scheduler enqueues each selfplay job in a trace of its own; a stand-in worker
completes each job with its outcome event, as the executor does; the coordinator is fed
from the event log by its durable consumer. The round that the second game batch
triggers must stay in that batch's trace up to MODEL_PROMOTED.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from zeroloop import tracing
from zeroloop.config import EventSettings, Settings
from zeroloop.events.bus import Event, EventBus
from zeroloop.events.runner import ConsumerRunner
from zeroloop.pipeline import jobs
from zeroloop.pipeline.coordinator import PipelineCoordinator
from zeroloop.pipeline.registry import ModelRegistry
from zeroloop.pipeline.scheduler import SelfplayScheduler
from zeroloop.queue.jobs import Job
from zeroloop.queue.manager import JobQueue
from zeroloop.store.database import Store
from zeroloop.store.queries import artifacts as artifact_queries
from zeroloop.store.queries import events as event_queries
from zeroloop.store.queries import pipelines as pipeline_queries

CONFIG = "tic_tac_toe_2p"


class Round:
    """The leader's parts over one store, and a stand-in worker that completes jobs with their outcome events."""

    def __init__(self, store: Store, settings: Settings) -> None:
        ticks = itertools.count(1000)
        self.clock = lambda: float(next(ticks))
        self.store = store
        self.bus = EventBus(store, node="n1", source="test", clock=self.clock)
        self.queue = JobQueue(store, self.bus, settings, clock=self.clock)
        registry = ModelRegistry(store, self.bus, clock=self.clock)
        self.coordinator = PipelineCoordinator(store, self.bus, self.queue, registry, settings, clock=self.clock)
        self.scheduler = SelfplayScheduler(store, self.queue, settings, clock=self.clock)

    def work(self, job_type: str, outcome: str, payload: dict[str, Any], from_job: tuple[str, ...] = ()) -> Job:
        """Lease the next job of `job_type`, complete it with its outcome event, then let the coordinator react.

        The event's payload is `payload` plus the `from_job` fields of the job's own payload.
        """
        lease = self.queue.claim("w1", types=[job_type])
        assert lease is not None, f"no {job_type} job queued"
        copied = {name: lease.job.payload[name] for name in from_job}
        body = {"config_key": CONFIG, "job_id": lease.job.id, **payload, **copied}
        self.queue.complete(lease.job.id, lease.token, {}, event=(outcome, body, f"{outcome}:{lease.job.id}"))
        runner = ConsumerRunner(self.bus, [self.coordinator.spec()], EventSettings(poll_interval_s=0.01))
        asyncio.run(runner.run_until_idle())
        return lease.job

    def game_batch(self, sha: str) -> Job:
        with self.store.transaction() as conn:
            artifact = {"sha256": sha, "kind": "game_batch", "size_bytes": 10, "config_key": CONFIG}
            artifact_queries.record_artifact(conn, {**artifact, "meta": {"samples": 8}, "created_at": self.clock()})
        return self.work(jobs.SELFPLAY, "SELFPLAY_COMPLETE", {"artifact_sha256": sha, "games": 2, "samples": 8})

    def trace_of(self, event_type: str) -> set[str | None]:
        with self.store.read() as conn:
            rows = event_queries.latest(conn, types=[event_type], limit=50)
        return {Event.from_row(row).trace_id for row in rows}


def test_a_round_stays_in_the_trace_of_the_game_batch_that_started_it(
    store: Store, settings: Settings, spans: InMemorySpanExporter
) -> None:
    settings.pipeline.train_after_samples = 10
    settings.pipeline.window_samples = 15
    settings.pipeline.baselines = ["random"]
    settings.pipeline.selfplay_queue_target = 2
    loop = Round(store, settings)
    with store.transaction() as conn:
        pipeline_queries.ensure_pipeline(conn, CONFIG, loop.clock())
    assert loop.scheduler.tick() == {CONFIG: 2}
    roots = [span for span in spans.get_finished_spans() if span.name == "enqueue selfplay"]
    assert len({span.context.trace_id for span in roots}) == 2  # a trace per selfplay job

    first = loop.game_batch("a" * 64)
    second = loop.game_batch("b" * 64)  # 16 samples: the round starts here
    trace_id = tracing.trace_id_of(second.traceparent)
    assert trace_id is not None and trace_id != tracing.trace_id_of(first.traceparent)
    export = loop.work(jobs.EXPORT, "NPZ_EXPORT_COMPLETE", {"window_sha256": "c" * 64, "samples": 16})
    train = loop.work(
        jobs.TRAIN,
        "TRAINING_COMPLETED",
        {"model_id": "x", "artifact_sha256": "d" * 64, "loss": 1.0, "samples": 16},
    )
    evaluate = loop.work(
        jobs.EVALUATE,
        "EVALUATION_RESULT",
        {"wins": 10, "draws": 0, "losses": 0, "elo_diff": 400.0, "elo_ci": 50.0},
        from_job=("model_id", "opponent"),
    )

    assert {tracing.trace_id_of(job.traceparent) for job in (export, train, evaluate)} == {trace_id}
    for event_type in ("NPZ_EXPORT_COMPLETE", "TRAINING_COMPLETED", "EVALUATION_RESULT"):
        assert loop.trace_of(event_type) == {trace_id}, event_type
    assert loop.trace_of("MODEL_PROMOTED") == {trace_id}
    handled = [span for span in spans.get_finished_spans() if span.name.startswith("event ")]
    assert {format(span.context.trace_id, "032x") for span in handled} == {
        trace_id,
        tracing.trace_id_of(first.traceparent),
    }
