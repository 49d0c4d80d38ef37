"""Where a daemon manager keeps its daemons' records: the store, directly (the remote twin is in zeroloop.remote)."""

from __future__ import annotations

from typing import Any, Protocol

from zeroloop.events.bus import EventBus
from zeroloop.store.database import Store
from zeroloop.store.queries import daemons as queries


class DaemonRecordPort(Protocol):
    """Write a process's daemon records and announce its crash loops (DaemonRecords; RemoteDaemonRecords)."""

    def write(self, rows: list[dict[str, Any]], crash_loops: list[dict[str, Any]]) -> None:
        """Upsert `rows` (the daemons table) and publish a DAEMON_CRASH_LOOP per payload, in one transaction."""
        ...


class DaemonRecords:
    """Writes daemon rows and crash-loop events to one store, in one transaction."""

    def __init__(self, store: Store, bus: EventBus) -> None:
        self.store = store
        self.bus = bus

    def write(self, rows: list[dict[str, Any]], crash_loops: list[dict[str, Any]]) -> None:
        """Upsert `rows` into the daemons table and publish DAEMON_CRASH_LOOP for each payload."""
        with self.store.transaction() as conn:
            for row in rows:
                queries.upsert_daemon(conn, row)
            for payload in crash_loops:
                self.bus.publish("DAEMON_CRASH_LOOP", payload)
