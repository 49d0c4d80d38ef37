"""Distributed tracing with OpenTelemetry: one trace follows work across processes and machines.

Call sites use only this module. `span(name)` opens a span: a child of the active one, or
of the W3C `traceparent` string it is given (`00-<trace id>-<span id>-<flags>`). The active
context, as that string, rides on everything that crosses a process or a machine:

- every event published inside a span records it (the events table's `trace_id` column),
  and the consumer that handles the event continues it;
- every job enqueued inside a span keeps it in its payload (under `TRACE_KEY`, which
  `Job.from_row` lifts into `Job.traceparent`), and the executor that runs the job
  continues it, so the job's outcome event, and the jobs that event causes, stay in it.

So one trace runs from a selfplay job's enqueue through its game batch, the export, the
training, the evaluation and the promotion. `setup(settings)` picks where spans go
(`tracing.exporter`): `none` keeps the OpenTelemetry API's no-op, which creates no span
and only passes on a context that arrived from elsewhere; `console` and `file` write one
JSON line per span; `otlp` sends batches to a collector (the `zeroloop[otlp]` extra).
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from zeroloop.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from zeroloop.config import Settings

P = ParamSpec("P")
R = TypeVar("R")

TRACE_KEY = "_traceparent"  # the job payload key that carries the context of the span that enqueued it
SCOPE = "zeroloop"
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-(?P<trace>[0-9a-f]{32})-(?P<span>[0-9a-f]{16})-[0-9a-f]{2}$")
_PROPAGATOR = TraceContextTextMapPropagator()
# The API's proxy: a no-op until a provider is installed globally (by zeroloop's host application, say).
_API_TRACER = trace.get_tracer(SCOPE)


class _Installed:
    """The tracer provider `setup` installed in this process, and what it was set up from."""

    def __init__(self) -> None:
        self.provider: TracerProvider | None = None
        self.tracer: trace.Tracer = _API_TRACER
        self.key: tuple[Any, ...] | None = None


# One per process, like OpenTelemetry's own global provider, but replaceable and closable.
_installed = _Installed()


@contextmanager
def span(
    name: str,
    *,
    parent: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
    root: bool = False,
) -> Iterator[trace.Span]:
    """Open a span named `name`: a child of `parent` (a traceparent) if given, else of the active span.

    `root` starts a new trace even inside a span. An exception leaving the block marks
    the span as failed and is raised on.
    """
    if parent is not None:
        context: otel_context.Context | None = _PROPAGATOR.extract({"traceparent": parent})
    else:
        context = otel_context.Context() if root else None
    with _installed.tracer.start_as_current_span(name, context=context, attributes=attributes) as opened:
        yield opened


def continue_trace(parent: str | None, name: str) -> AbstractContextManager[trace.Span]:
    """Open a span that continues `parent` (the traceparent of an event or a job), or the active trace if None."""
    return span(name, parent=parent)


def traced(name: str | None = None) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Decorate an async function so each call runs in a span named `name` (default: its qualname)."""

    def decorate(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        label = name or func.__qualname__

        @functools.wraps(func)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with span(label):
                return await func(*args, **kwargs)

        return wrapper

    return decorate


def traceparent() -> str | None:
    """The active span's context as a W3C traceparent, or None outside any (valid) span."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def within(parent: str | None) -> str | None:
    """The traceparent to record for work that belongs to `parent`'s trace.

    The active context when it is in that trace (it is the more precise parent), else
    `parent` itself; with no `parent`, the active context.
    """
    active = traceparent()
    if parent is None or (active is not None and trace_id_of(active) == trace_id_of(parent)):
        return active
    return parent


def trace_id_of(parent: str | None) -> str | None:
    """The trace id (32 hex digits) inside a traceparent; None if it is not one."""
    found = _TRACEPARENT.match(parent) if parent else None
    return found.group("trace") if found else None


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the active span in hex, or None outside any (valid) span."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def get_trace_id() -> str | None:
    """The trace id (32 hex digits) of the active span, or None outside any."""
    ids = current_ids()
    return ids[0] if ids else None


# --- setup ------------------------------------------------------------------------------------


def setup(settings: Settings, *, exporter: SpanExporter | None = None) -> None:
    """Install the tracer provider `settings.tracing` asks for (or one feeding `exporter`) in this process.

    Calling it again with the same settings keeps what is installed; other settings
    replace it (the old provider is flushed and shut down). With exporter `none` and no
    `exporter` given, only the API's no-op remains.
    """
    options = settings.tracing
    key = (options.model_dump_json(), settings.cluster.node_id, str(settings.data_dir), id(exporter))
    if key == _installed.key:
        return
    shutdown()
    chosen = exporter or _exporter_for(settings)
    _installed.key = key
    if chosen is None:
        return
    # The SDK is imported only when spans are kept: a command that traces nothing never loads it.
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(
        resource=Resource({"service.name": options.service_name, "service.instance.id": settings.cluster.node_id}),
    )
    # OTLP goes in batches off the hot path; a line of JSON is cheap enough to write as each span ends.
    batched = exporter is None and options.exporter == "otlp"
    provider.add_span_processor(BatchSpanProcessor(chosen) if batched else SimpleSpanProcessor(chosen))
    _installed.provider = provider
    _installed.tracer = provider.get_tracer(SCOPE)


def shutdown() -> None:
    """Flush and remove the provider `setup` installed; spans are no-ops again afterwards."""
    provider = _installed.provider
    _installed.provider, _installed.tracer, _installed.key = None, _API_TRACER, None
    if provider is not None:
        provider.shutdown()


def _exporter_for(settings: Settings) -> SpanExporter | None:
    options = settings.tracing
    if options.exporter in ("console", "file"):
        from zeroloop.tracing_export import JsonLinesExporter
    if options.exporter == "console":
        return JsonLinesExporter(stream=sys.stderr)
    if options.exporter == "file":
        return JsonLinesExporter(path=options.file or settings.data_dir / "traces.jsonl")
    if options.exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ConfigError(
                "tracing.exporter = otlp needs the OTLP exporter: pip install 'zeroloop[otlp]', or choose another"
            ) from None
        return OTLPSpanExporter(endpoint=options.endpoint)
    return None
