"""The one event bus of zeroloop: typed, durable, owned by the App and passed in.

`publish` validates the payload against the catalogue and appends the event to the
durable log in the store, inside the caller's open transaction when there is one (the
transactional outbox: a state change and its event commit together or not at all).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zeroloop.events import catalogue
from zeroloop.events.catalogue import Payload
from zeroloop.store.database import Store
from zeroloop.store.queries import events as queries
from zeroloop.tracing import get_trace_id

Clock = Callable[[], float]


@dataclass(frozen=True)
class Event:
    """One event as stored in the log; `id` is its offset (created_at: epoch seconds)."""

    id: int
    type: str
    payload: dict[str, Any]
    source: str
    node: str
    created_at: float
    config_key: str | None = None
    trace_id: str | None = None
    correlation_id: str | None = None
    causation_id: int | None = None
    dedup_key: str | None = None

    def model(self) -> Payload:
        """The payload as its declared model."""
        return catalogue.validate(self.type, self.payload)


class EventBus:
    """Publishes events to the durable log of one store on behalf of one process."""

    def __init__(self, store: Store, *, node: str, source: str, clock: Clock = time.time) -> None:
        self.store = store
        self.node = node
        self.source = source
        self.clock = clock

    def publish(
        self,
        event_type: str,
        payload: Payload | dict[str, Any],
        *,
        dedup_key: str | None = None,
        source: str | None = None,
        correlation_id: str | None = None,
        causation: Event | int | None = None,
    ) -> int:
        """Validate and append one event; return its id (the first id again for a repeated dedup key)."""
        model = catalogue.validate(event_type, payload)
        causation_id = causation.id if isinstance(causation, Event) else causation
        trace_id = get_trace_id() or (causation.trace_id if isinstance(causation, Event) else None)
        if correlation_id is None and isinstance(causation, Event):
            correlation_id = causation.correlation_id
        row = {
            "type": event_type,
            "payload": model.model_dump(mode="json"),
            "source": source or self.source,
            "node": self.node,
            "created_at": self.clock(),
            "config_key": getattr(model, "config_key", None),
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "causation_id": causation_id,
            "dedup_key": dedup_key,
        }
        with self.store.transaction() as conn:
            event_id, _inserted = queries.insert_event(conn, row)
        return event_id
