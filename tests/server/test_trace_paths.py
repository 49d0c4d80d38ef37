"""A job's trace over both worker paths: over the store, and behind `zeroloop serve`.

The job reaches the worker with its trace context either way (over HTTP as part of its
row), and the worker runs it in a span continuing it. Its outcome event stays in the
trace: over the store it is published inside the worker's job span; behind the server
inside the server's span of the request, which continues the worker's job span (the
worker sends a `traceparent` header).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.server.test_worker_paths import SELFPLAY, Cluster, _cluster
from zeroloop import tracing
from zeroloop.config import Settings
from zeroloop.events.bus import Event
from zeroloop.pipeline import jobs
from zeroloop.store.queries import events as event_queries


@pytest.fixture(params=["direct", "server"])
def cluster(request: pytest.FixtureRequest, store_url: str, tmp_path: Path, settings: Settings) -> Iterator[Cluster]:
    """A command-workload App and a worker over the store (`direct`) or over a server (`server`)."""
    yield from _cluster(str(request.param), store_url, tmp_path, SELFPLAY)


def test_a_job_run_on_either_path_stays_in_the_trace_it_was_enqueued_in(
    cluster: Cluster, spans: InMemorySpanExporter
) -> None:
    with tracing.span("enqueue selfplay", root=True) as enqueued:
        job = cluster.app.queue.enqueue(jobs.SELFPLAY, "ringrift_2p", {"games": 2})
    origin = enqueued.get_span_context()
    executor = cluster.executor()
    try:
        assert asyncio.run(executor.run_once())
    finally:
        executor.close()
    (ran,) = [span for span in spans.get_finished_spans() if span.name == "job selfplay"]
    assert ran.parent is not None
    assert (ran.context.trace_id, ran.parent.span_id) == (origin.trace_id, origin.span_id)
    assert ran.attributes is not None and ran.attributes["zeroloop.job.id"] == job.id
    with cluster.app.store.read() as conn:
        (row,) = event_queries.latest(conn, types=["SELFPLAY_COMPLETE"])
    outcome = Event.from_row(row)
    assert outcome.trace_id == format(origin.trace_id, "032x")
    assert outcome.traceparent is not None
    parent = int(outcome.traceparent.split("-")[2], 16)
    if cluster.path == "direct":
        assert parent == ran.context.span_id
    else:
        (request,) = [span for span in spans.get_finished_spans() if span.context.span_id == parent]
        assert request.name.startswith("POST ") and request.name.endswith(f"/jobs/{job.id}/complete")
        assert request.parent is not None and request.parent.span_id == ran.context.span_id
