"""Distributed tracing: a trace id that follows work across processes and machines.

A trace id lives in a context variable. `span(name)` opens a span (starting a trace if
none is active); events published inside carry the trace id, and a consumer handling
such an event continues the same trace with `continue_trace`. Spans are logged at DEBUG
(or INFO when `trace_debug` is set) with their duration in seconds.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class Span:
    """One timed unit of work within a trace (start: epoch seconds)."""

    name: str
    trace_id: str
    span_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    parent_id: str | None = None
    start: float = field(default_factory=time.time)


_current: contextvars.ContextVar[Span | None] = contextvars.ContextVar("zeroloop_span", default=None)
_verbose = False


def set_verbose(verbose: bool) -> None:
    """Log every closing span at INFO instead of DEBUG (the `trace_debug` setting)."""
    global _verbose  # noqa: PLW0603 - a logging level switch, not state
    _verbose = verbose


def new_trace_id() -> str:
    """A fresh random trace id (32 hex digits)."""
    return uuid.uuid4().hex


def get_trace_id() -> str | None:
    """The trace id of the active span, or None outside any span."""
    span = _current.get()
    return span.trace_id if span else None


def current_span() -> Span | None:
    """The active span, or None."""
    return _current.get()


@contextmanager
def span(name: str, trace_id: str | None = None) -> Iterator[Span]:
    """Open a span named `name`, inside the active trace, or a new one (or `trace_id`)."""
    parent = _current.get()
    opened = Span(
        name=name,
        trace_id=trace_id or (parent.trace_id if parent else new_trace_id()),
        parent_id=parent.span_id if parent else None,
    )
    token = _current.set(opened)
    try:
        yield opened
    finally:
        _current.reset(token)
        elapsed = time.time() - opened.start
        log.log(logging.INFO if _verbose else logging.DEBUG, "span %s trace=%s %.4fs", name, opened.trace_id, elapsed)


def continue_trace(trace_id: str | None, name: str) -> AbstractContextManager[Span]:
    """Open a span that continues `trace_id` (e.g. from an event), or a new trace if None."""
    return span(name, trace_id=trace_id)


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
