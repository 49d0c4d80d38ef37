"""What a consumer is (`ConsumerSpec`) and how one handler call is made.

A handler takes an `Event` and is either a coroutine function (awaited on the loop) or
a plain function (run in a worker thread, never on the loop). A *transactional* sync
handler runs inside a store transaction that also moves the consumer's cursor (or
resolves its dead letter): its own store writes and the acknowledgement commit
together, so it is handled exactly once as far as the store can tell. A *fence* (the
leader's lease guard) runs first in that transaction: a deposed leader's handler
commits nothing, not even its acknowledgement.

`is_transient` tells failures of the moment (the store unreachable or busy, a queue at
backpressure STOP) from failures of the handler: the former are waited out, never
counted towards dead-lettering.
"""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, OperationalError

from zeroloop.errors import BackpressureRefused, EventError, StoreUnavailable
from zeroloop.events import wiring
from zeroloop.store.database import Store
from zeroloop.tracing import continue_trace

if TYPE_CHECKING:
    from zeroloop.events.bus import Event

Handler = Callable[["Event"], Any]
Acknowledge = Callable[[Connection], None]
Fence = Callable[[Connection], None]
_SQLITE_TRANSIENT = ("locked", "busy", "unable to open", "disk i/o error", "disk is full")


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` is a failure of the moment: the store unreachable or locked, or backpressure STOP.

    Such a failure says nothing about the event or the job at hand, so callers retry it
    with backoff for as long as it lasts instead of counting it as an attempt.
    """
    if isinstance(exc, StoreUnavailable | BackpressureRefused):
        return True
    if isinstance(exc, OperationalError) and isinstance(exc.orig, sqlite3.OperationalError):
        # SQLite also reports mistakes as OperationalError ("no such table"): only these pass with time.
        message = str(exc.orig).lower()
        return any(sign in message for sign in _SQLITE_TRANSIENT)
    if isinstance(exc, OperationalError):
        return True  # PostgreSQL: the server went away, shuts down, is out of space or connections
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


class HandlerTimeout(EventError):
    """A handler took longer than events.handler_timeout_s."""


@dataclass(frozen=True)
class ConsumerSpec:
    """A named consumer: its handler, the event types (empty: all) and config keys (None: all) it takes.

    `durable` consumers keep their cursor in the store (table `consumers`) and resume
    where they stopped; others start at the end of the log each run. `start` says where
    a durable consumer seen for the first time begins. `transactional` (sync handlers
    only) commits the handler's store writes with the acknowledgement.
    """

    name: str
    handler: Handler = field(compare=False)
    types: tuple[str, ...] = ()
    config_keys: Sequence[str] | None = None
    durable: bool = True
    transactional: bool = False
    start: Literal["earliest", "latest"] = "earliest"

    def __post_init__(self) -> None:
        if self.transactional and self.is_async:
            raise EventError(f"consumer {self.name}: a transactional handler must be a plain (sync) function")
        from zeroloop.events.catalogue import EVENT_TYPES

        unknown = sorted(set(self.types) - set(EVENT_TYPES))
        if unknown:
            raise EventError(f"consumer {self.name} handles unknown event types: {', '.join(unknown)}")
        wiring.record_subscription(self.name, self.types, self.handler)

    @property
    def is_async(self) -> bool:
        """Whether the handler is a coroutine function (or an object whose __call__ is one)."""
        call = getattr(self.handler, "__call__", None)  # noqa: B004 - callable objects too
        return inspect.iscoroutinefunction(self.handler) or inspect.iscoroutinefunction(call)

    def declare(self) -> wiring.Declaration:
        """Declare to the wiring check that this consumer handles its types (only named types count)."""
        return wiring.declare(self.name, handles=self.types)

    def matches(self, event: Event) -> bool:
        """Whether this consumer takes `event` by its filters."""
        if self.types and event.type not in self.types:
            return False
        return self.config_keys is None or event.config_key in self.config_keys


async def call_handler(
    spec: ConsumerSpec,
    event: Event,
    *,
    store: Store,
    timeout_s: float,
    acknowledge: Acknowledge | None = None,
    fence: Fence | None = None,
) -> None:
    """Run the handler once within `timeout_s` seconds; raise what it raised, or HandlerTimeout.

    For a transactional spec, `fence(conn)` runs first in the handler's transaction and
    `acknowledge(conn)` after the handler returns; otherwise the caller acknowledges
    (and fences its acknowledgement) after this returns.
    """
    label = f"event {event.type} -> {spec.name}"
    if spec.is_async:

        async def run_async() -> None:
            with continue_trace(event.traceparent, label):
                result = spec.handler(event)
                if inspect.isawaitable(result):
                    await result

        await _bounded(run_async(), spec, timeout_s)
        return
    abandoned = threading.Event()
    deadline = time.monotonic() + timeout_s

    def run_sync() -> None:
        with continue_trace(event.traceparent, label):
            if not spec.transactional:
                spec.handler(event)
                return
            with store.transaction() as conn:
                if fence is not None:
                    fence(conn)
                spec.handler(event)
                # A thread cannot be cancelled; one that overran must not commit its
                # acknowledgement after the runner has counted the attempt as failed.
                if abandoned.is_set() or time.monotonic() > deadline:
                    raise HandlerTimeout(f"consumer {spec.name} overran {timeout_s} s on event {event.id}")
                if acknowledge is not None:
                    acknowledge(conn)

    try:
        await _bounded(asyncio.to_thread(run_sync), spec, timeout_s)
    except HandlerTimeout:
        abandoned.set()
        raise


async def _bounded(work: Awaitable[None], spec: ConsumerSpec, timeout_s: float) -> None:
    try:
        await asyncio.wait_for(work, timeout_s)
    except TimeoutError:
        raise HandlerTimeout(f"consumer {spec.name}: handler took longer than {timeout_s} s") from None
