"""Where the `console` and `file` trace exporters write: one JSON line per finished span.

Kept apart from zeroloop.tracing so that the OpenTelemetry SDK is imported only by a
process that keeps spans (`tracing.exporter` other than `none`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult


def span_record(finished: ReadableSpan) -> dict[str, Any]:
    """One finished span as a flat JSON-safe dict (ids in hex, times in epoch seconds)."""
    context = finished.get_span_context()
    assert context is not None
    parent = finished.parent
    return {
        "name": finished.name,
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "parent_span_id": format(parent.span_id, "016x") if parent is not None else None,
        "start_s": (finished.start_time or 0) / 1e9,
        "end_s": (finished.end_time or 0) / 1e9,
        "status": finished.status.status_code.name.lower(),
        "attributes": dict(finished.attributes or {}),
        "resource": dict(finished.resource.attributes),
        "pid": os.getpid(),
    }


class JsonLinesExporter(SpanExporter):
    """Writes each finished span as one JSON line (see `span_record`): appended to a file, or to a stream."""

    def __init__(self, *, path: Path | None = None, stream: TextIO | None = None) -> None:
        """Give `path` (appended to; several processes may share it) or `stream` (e.g. stderr)."""
        if (path is None) == (stream is None):
            raise ValueError("give a path or a stream")
        self.path = path
        self.stream = stream
        self._fd: int | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Write the spans; FAILURE (and the spans are dropped) if the file cannot be written."""
        lines = "".join(json.dumps(span_record(one), default=str) + "\n" for one in spans)
        if self.stream is not None:
            self.stream.write(lines)
            self.stream.flush()
            return SpanExportResult.SUCCESS
        assert self.path is not None
        try:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            # One append per batch: lines of processes sharing the file do not interleave.
            os.write(self._fd, lines.encode())
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Close the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
