"""Event metrics: per type and consumer, published, delivered, failed, dead, and consumer lag.

`published` is counted from the log (events still retained); delivered, failed (handler
attempts that raised or timed out) and dead are counters the runner keeps in the
`event_metrics` table; lag is the number of events after a consumer's cursor that match
its filter.
"""

from __future__ import annotations

from dataclasses import dataclass

from zeroloop.store.database import Store
from zeroloop.store.queries import consumers as consumer_queries
from zeroloop.store.queries import dead_letters as letter_queries
from zeroloop.store.queries import events as queries


@dataclass(frozen=True)
class ConsumerStats:
    """One durable consumer: its cursor (txid, id), lag (events) and counters per event type."""

    name: str
    cursor: tuple[int, int]
    lag: int
    types: list[str]
    config_keys: list[str] | None
    counters: dict[str, dict[str, int]]


@dataclass(frozen=True)
class EventStats:
    """The whole picture: events in the log per type, every consumer, dead letters per status."""

    published: dict[str, int]
    consumers: list[ConsumerStats]
    dead_letters: dict[str, int]


def stats(store: Store) -> EventStats:
    """Read every metric in one read transaction."""
    with store.read() as conn:
        published = queries.count_by_type(conn)
        counters: dict[str, dict[str, dict[str, int]]] = {}
        for row in consumer_queries.read_metrics(conn):
            counters.setdefault(row["consumer"], {})[row["event_type"]] = {
                "delivered": int(row["delivered"]),
                "failed": int(row["failed"]),
                "dead": int(row["dead"]),
            }
        consumers = []
        for row in consumer_queries.list_consumers(conn):
            cursor = (int(row["cursor_txid"]), int(row["cursor"]))
            types = list(row["types"] or [])
            keys = list(row["config_keys"]) if row["config_keys"] is not None else None
            lag = queries.count_after(conn, cursor, types=types, config_keys=keys)
            consumers.append(ConsumerStats(row["name"], cursor, lag, types, keys, counters.pop(row["name"], {})))
        for name, per_type in sorted(counters.items()):  # in-process subscribers have counters but no cursor
            consumers.append(ConsumerStats(name, (0, 0), 0, [], None, per_type))
        letters = letter_queries.count_by_status(conn)
    return EventStats(published, consumers, letters)
