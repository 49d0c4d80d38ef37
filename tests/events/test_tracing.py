"""Tracing: spans nest, events and jobs carry the context, consumers and executors continue it."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.helpers import serve_http
from zeroloop import tracing, tracing_export
from zeroloop.app import App
from zeroloop.config import EventSettings, Settings, TracingSettings
from zeroloop.errors import QueueError
from zeroloop.events.bus import Event, EventBus
from zeroloop.events.consumer import ConsumerSpec
from zeroloop.events.runner import ConsumerRunner
from zeroloop.pipeline import jobs
from zeroloop.store.database import Store
from zeroloop.store.queries import events as event_queries


def _ids(opened: object) -> tuple[str, str]:
    context = opened.get_span_context()  # type: ignore[attr-defined]
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def _parent(finished: ReadableSpan) -> str | None:
    return format(finished.parent.span_id, "016x") if finished.parent else None


def _events(app: App, event_type: str) -> list[Event]:
    with app.store.read() as conn:
        return [Event.from_row(row) for row in event_queries.latest(conn, types=[event_type], limit=100)]


def test_spans_nest_inside_one_trace_and_end_with_it(spans: InMemorySpanExporter) -> None:
    assert tracing.get_trace_id() is None
    with tracing.span("outer") as outer, tracing.span("inner") as inner:
        assert _ids(inner)[0] == _ids(outer)[0] == tracing.get_trace_id()
        assert str(tracing.traceparent()).startswith(f"00-{_ids(inner)[0]}-{_ids(inner)[1]}-")
    assert tracing.get_trace_id() is None
    finished = {span.name: span for span in spans.get_finished_spans()}
    assert _parent(finished["inner"]) == _ids(outer)[1]
    assert _parent(finished["outer"]) is None


def test_a_root_span_starts_a_new_trace_inside_another_and_a_parent_given_wins(spans: InMemorySpanExporter) -> None:
    with tracing.span("outer") as outer:
        with tracing.span("fresh", root=True) as fresh:
            assert _ids(fresh)[0] != _ids(outer)[0]
        given = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        with tracing.span("continued", parent=given) as continued:
            assert _ids(continued)[0] == "0af7651916cd43dd8448eb211c80319c"
    assert _parent(next(s for s in spans.get_finished_spans() if s.name == "continued")) == "b7ad6b7169203331"


def test_a_failing_block_marks_its_span_failed(spans: InMemorySpanExporter) -> None:
    with pytest.raises(ValueError, match="boom"), tracing.span("work"):
        raise ValueError("boom")
    assert tracing_export.span_record(spans.get_finished_spans()[0])["status"] == "error"


def test_traced_coroutines_run_in_a_span(spans: InMemorySpanExporter) -> None:
    seen: list[str | None] = []

    @tracing.traced("work")
    async def work() -> None:
        seen.append(tracing.get_trace_id())

    asyncio.run(work())
    assert seen[0] is not None
    assert [span.name for span in spans.get_finished_spans()] == ["work"]


def test_without_an_exporter_spans_cost_no_ids_but_a_context_from_elsewhere_passes_on() -> None:
    given = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with tracing.span("local"):
        assert tracing.traceparent() is None
        with tracing.span("continued", parent=given):
            assert tracing.traceparent() == given  # a process that traces nothing still hands the trace on


def test_a_consumer_continues_the_trace_of_the_event_it_handles(store: Store, spans: InMemorySpanExporter) -> None:
    bus = EventBus(store, node="n1", source="test")
    handled: list[tuple[str | None, str | None]] = []

    def handler(event: Event) -> None:
        handled.append((event.trace_id, tracing.get_trace_id()))

    with tracing.span("lost") as opened:
        bus.publish("NODE_LOST", {"node": "w1", "silent_s": 1.0})
    spec = ConsumerSpec("tracer", handler, types=("NODE_LOST",))
    runner = ConsumerRunner(bus, [spec], EventSettings(poll_interval_s=0.01))
    asyncio.run(runner.run_until_idle())
    trace_id, span_id = _ids(opened)
    assert handled == [(trace_id, trace_id)]
    consumed = next(span for span in spans.get_finished_spans() if span.name.endswith("-> tracer"))
    assert _parent(consumed) == span_id


def test_a_job_enqueued_in_a_span_keeps_its_context_apart_from_its_payload(
    app: App, spans: InMemorySpanExporter
) -> None:
    with tracing.span("round") as opened:
        job = app.queue.enqueue(jobs.SELFPLAY, "c_2p", {"games": 1})
    outside = app.queue.enqueue(jobs.SELFPLAY, "c_2p", {"games": 2})
    stored = app.queue.get(job.id)
    assert stored.payload == {"games": 1}  # what the producer gave; the workers parse it strictly
    assert str(stored.traceparent).startswith(f"00-{_ids(opened)[0]}-{_ids(opened)[1]}-")
    assert app.queue.get(outside.id).traceparent is None
    queued = {event.payload["job_id"]: event.trace_id for event in _events(app, "JOB_QUEUED")}
    assert queued == {job.id: _ids(opened)[0], outside.id: None}


def test_a_payload_may_not_use_the_trace_key(app: App) -> None:
    with pytest.raises(QueueError, match="reserved for the trace context"):
        app.queue.enqueue(jobs.SELFPLAY, "c_2p", {"games": 1, tracing.TRACE_KEY: "00-x"})


def test_events_about_a_job_stay_in_its_trace_whoever_publishes_them(app: App, spans: InMemorySpanExporter) -> None:
    with tracing.span("enqueue a") as first:
        job_a = app.queue.enqueue(jobs.SELFPLAY, "c_2p", {"games": 1}, priority=2)
    with tracing.span("enqueue b") as second:
        job_b = app.queue.enqueue(jobs.SELFPLAY, "c_2p", {"games": 1}, priority=1)
    lease_a = app.queue.claim("w1")
    assert lease_a is not None and lease_a.job.id == job_a.id
    # Completed outside any span (the server does so for a worker behind it), leasing b meanwhile inside a's span.
    outcome = ("SELFPLAY_COMPLETE", {"config_key": "c_2p", "job_id": job_a.id, "artifact_sha256": "a" * 64,
                                     "games": 1, "samples": 5}, "done-a")  # fmt: skip
    with tracing.span("unrelated", root=True):
        _done, lease_b = app.queue.complete_and_claim(job_a.id, lease_a.token, {}, node="w1", event=outcome)
    assert lease_b is not None and lease_b.job.id == job_b.id
    assert _events(app, "SELFPLAY_COMPLETE")[0].trace_id == _ids(first)[0]
    claimed = {event.payload["job_id"]: event.trace_id for event in _events(app, "JOB_CLAIMED")}
    assert claimed == {job_a.id: _ids(first)[0], job_b.id: _ids(second)[0]}
    app.queue.fail(job_b.id, lease_b.token, "broken", retryable=False)
    assert _events(app, "JOB_DEAD")[0].trace_id == _ids(second)[0]


def test_the_file_exporter_appends_one_json_line_per_span(tmp_path: Path, settings: Settings) -> None:
    path = tmp_path / "spans" / "traces.jsonl"
    tracing.setup(settings.model_copy(update={"tracing": TracingSettings(exporter="file", file=path)}))
    try:
        with tracing.span("outer", attributes={"zeroloop.job.id": 7}), tracing.span("inner"):
            pass
    finally:
        tracing.shutdown()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["name"] for line in lines] == ["inner", "outer"]
    assert lines[0]["parent_span_id"] == lines[1]["span_id"] and lines[0]["trace_id"] == lines[1]["trace_id"]
    assert lines[1]["attributes"] == {"zeroloop.job.id": 7}
    assert lines[1]["resource"]["service.instance.id"] == settings.cluster.node_id


def test_the_console_exporter_writes_json_lines_to_stderr(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    tracing.setup(settings.model_copy(update={"tracing": TracingSettings(exporter="console")}))
    try:
        with tracing.span("shown"):
            pass
    finally:
        tracing.shutdown()
    assert json.loads(err.getvalue())["name"] == "shown"


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver on loopback: keeps each request's path, content type and body."""

    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # no request lines on the test's stderr


@pytest.fixture
def collector() -> Iterator[str]:
    """The URL of a loopback OTLP/HTTP traces endpoint; what it received is in `_Collector.received`."""
    _Collector.received = []
    with serve_http(_Collector) as url:
        yield f"{url}/v1/traces"


def test_the_otlp_exporter_sends_the_spans_to_the_endpoint_setting(settings: Settings, collector: str) -> None:
    tracing.setup(settings.model_copy(update={"tracing": TracingSettings(exporter="otlp", endpoint=collector)}))
    try:
        with tracing.span("sent over otlp") as opened:
            pass
    finally:
        tracing.shutdown()  # flushes the batch
    ((path, content_type, body),) = _Collector.received
    assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
    assert b"sent over otlp" in body and opened.get_span_context().trace_id.to_bytes(16, "big") in body


def test_setting_up_again_with_the_same_settings_keeps_the_provider(settings: Settings, tmp_path: Path) -> None:
    chosen = settings.model_copy(update={"tracing": TracingSettings(exporter="file", file=tmp_path / "t.jsonl")})
    tracing.setup(chosen)
    try:
        first = tracing._installed.provider
        tracing.setup(chosen)
        assert tracing._installed.provider is first is not None
        tracing.setup(settings)  # exporter none: back to the API's no-op
        assert tracing._installed.provider is None
    finally:
        tracing.shutdown()
