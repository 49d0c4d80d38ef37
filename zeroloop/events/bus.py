"""The one event bus of zeroloop: typed, durable, owned by the App and passed in.

`publish` validates the payload against the catalogue and appends the event to the
durable log in the store, inside the caller's open transaction when there is one (the
transactional outbox: a state change and its event commit together or not at all). On
PostgreSQL the same statement issues `pg_notify`, which the server delivers only if the
transaction commits; it only wakes listeners, the payload stays in the log.

Handlers never run inside `publish`: in-process subscribers (`subscribe`) and durable
consumers are both fed from the log by a `ConsumerRunner`, so an event whose transaction
rolls back is never delivered to anyone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import RowMapping

from zeroloop import tracing
from zeroloop.config import EventSettings
from zeroloop.errors import EventError
from zeroloop.events import catalogue, wiring
from zeroloop.events.catalogue import Payload
from zeroloop.events.consumer import ConsumerSpec, Handler
from zeroloop.store.database import Store
from zeroloop.store.queries import events as queries
from zeroloop.store.values import check_json, check_text

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
    traceparent: str | None = None  # the W3C trace context it was published in (the `trace_id` column)
    correlation_id: str | None = None
    causation_id: int | None = None
    dedup_key: str | None = None
    txid: int = 0

    @property
    def trace_id(self) -> str | None:
        """The id (32 hex digits) of the trace this event belongs to, or None."""
        return tracing.trace_id_of(self.traceparent)

    @property
    def position(self) -> tuple[int, int]:
        """Where the event sits in delivery order: (txid, id); txid is 0 on SQLite."""
        return (self.txid, self.id)

    def model(self) -> Payload:
        """The payload as its declared model."""
        return catalogue.validate(self.type, self.payload)

    @classmethod
    def from_row(cls, row: RowMapping) -> Event:
        """Build an Event from an `events` table row."""
        return cls(
            id=int(row["id"]),
            type=row["type"],
            payload=dict(row["payload"]),
            source=row["source"],
            node=row["node"],
            created_at=float(row["created_at"]),
            config_key=row["config_key"],
            traceparent=row["trace_id"],
            correlation_id=row["correlation_id"],
            causation_id=row["causation_id"],
            dedup_key=row["dedup_key"],
            txid=int(row["txid"] or 0),
        )


class EventBus:
    """Publishes events to the durable log of one store on behalf of one process, and keeps its subscriptions."""

    def __init__(
        self,
        store: Store,
        *,
        node: str,
        source: str,
        clock: Clock = time.time,
        max_payload_bytes: int | None = None,
    ) -> None:
        """`max_payload_bytes` (bytes of JSON) defaults to the events.max_payload_bytes setting's default."""
        self.store = store
        self.node = node
        self.source = source
        self.clock = clock
        default = EventSettings.model_fields["max_payload_bytes"].default
        self.max_payload_bytes: int = default if max_payload_bytes is None else max_payload_bytes
        self.subscriptions: list[ConsumerSpec] = []
        self._subscriptions_owner: object | None = None

    def _row(
        self,
        event_type: str,
        payload: Payload | dict[str, Any],
        dedup_key: str | None,
        source: str | None,
        correlation_id: str | None,
        causation: Event | int | None,
        traceparent: str | None = None,
    ) -> dict[str, Any]:
        model = catalogue.validate(event_type, payload)
        body = model.model_dump(mode="json")
        # The same refusals on both backends: PostgreSQL cannot keep a NUL, and a huge payload slows every reader.
        check_json(body, f"the payload of event {event_type}", self.max_payload_bytes, EventError)
        for what, text in (("source", source), ("dedup_key", dedup_key), ("correlation_id", correlation_id)):
            check_text(text, f"the {what} of event {event_type}", EventError)
        wiring.record_publish(event_type)
        causation_id = causation.id if isinstance(causation, Event) else causation
        trace = tracing.within(traceparent) or (causation.traceparent if isinstance(causation, Event) else None)
        if correlation_id is None and isinstance(causation, Event):
            correlation_id = causation.correlation_id
        return {
            "type": event_type,
            "payload": body,
            "source": source or self.source,
            "node": self.node,
            "created_at": self.clock(),
            "config_key": getattr(model, "config_key", None),
            "trace_id": trace,
            "correlation_id": correlation_id,
            "causation_id": causation_id,
            "dedup_key": dedup_key,
        }

    def publish(
        self,
        event_type: str,
        payload: Payload | dict[str, Any],
        *,
        dedup_key: str | None = None,
        source: str | None = None,
        correlation_id: str | None = None,
        causation: Event | int | None = None,
        traceparent: str | None = None,
    ) -> int:
        """Validate and append one event; return its id (the first id again for a repeated dedup key).

        The event records the active trace context; `traceparent` names the trace it belongs
        to when the active span may be another's (see `tracing.within`).
        """
        row = self._row(event_type, payload, dedup_key, source, correlation_id, causation, traceparent)
        with self.store.transaction() as conn:
            event_id, _inserted = queries.insert_event(conn, row)
        return event_id

    def publish_many(
        self,
        items: Sequence[tuple[str, Payload | dict[str, Any]] | tuple[str, Payload | dict[str, Any], str | None]],
        *,
        source: str | None = None,
        correlation_id: str | None = None,
        causation: Event | int | None = None,
    ) -> list[int]:
        """Validate all, then append them in one transaction (one commit); return their ids in order.

        Each item is (type, payload) or (type, payload, dedup_key). Nothing is appended
        if any payload is invalid.
        """
        rows = [
            self._row(item[0], item[1], item[2] if len(item) > 2 else None, source, correlation_id, causation)
            for item in items
        ]
        with self.store.transaction() as conn:
            return [event_id for event_id, _inserted in queries.insert_events(conn, rows)]

    def subscribe(
        self,
        handler: Handler,
        *,
        types: Sequence[str] = (),
        config_keys: Sequence[str] | None = None,
        name: str | None = None,
    ) -> ConsumerSpec:
        """Register an in-process handler (async, or sync: run off the loop) fed by this process's runner.

        Unlike a durable consumer it starts at the end of the log when the runner starts
        and keeps its cursor in memory. Empty `types` means every type.
        """
        qualname = getattr(handler, "__qualname__", type(handler).__name__)
        label = name or f"subscriber:{qualname}#{len(self.subscriptions) + 1}"
        spec = ConsumerSpec(label, handler, types=tuple(types), config_keys=config_keys, durable=False)
        self.subscriptions.append(spec)
        return spec

    def claim_subscriptions(self, owner: object) -> list[ConsumerSpec]:
        """The subscriptions, for the one runner of this process that serves them; [] for every other runner.

        A process may run several ConsumerRunners (one per daemon); only the first to
        claim delivers the in-process subscriptions, so none is delivered twice.
        """
        if self._subscriptions_owner is None:
            self._subscriptions_owner = owner
        return list(self.subscriptions) if self._subscriptions_owner is owner else []

    def release_subscriptions(self, owner: object) -> None:
        """Give the subscriptions back (the owning runner stopped); the next runner to claim serves them."""
        if self._subscriptions_owner is owner:
            self._subscriptions_owner = None
