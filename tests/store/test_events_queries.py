"""Contract tests of the event-log operations on both backends."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from zeroloop.store.database import Store
from zeroloop.store.queries import events as queries
from zeroloop.store.schema import events


def _row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "type": "NODE_LOST",
        "payload": {"node": "n1", "silent_s": 1.0},
        "source": "test",
        "node": "n1",
        "created_at": 1.0,
    }
    row.update(overrides)
    return row


def test_insert_event_assigns_increasing_ids(store: Store) -> None:
    with store.transaction() as conn:
        first, inserted = queries.insert_event(conn, _row())
        second, _ = queries.insert_event(conn, _row())
    assert inserted
    assert second > first


def test_repeated_dedup_key_returns_the_first_id(store: Store) -> None:
    with store.transaction() as conn:
        first, inserted_first = queries.insert_event(conn, _row(dedup_key="k"))
    with store.transaction() as conn:
        again, inserted_again = queries.insert_event(conn, _row(dedup_key="k", payload={"other": True}))
        queries.insert_event(conn, _row())  # the transaction is still usable after the conflict
    assert (again, inserted_first, inserted_again) == (first, True, False)
    with store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(events)).scalar_one() == 2


def test_postgres_events_record_their_transaction(store: Store) -> None:
    with store.transaction() as conn:
        queries.insert_event(conn, _row())
    with store.read() as conn:
        txid = conn.execute(sa.select(events.c.txid)).scalar_one()
    assert (txid is not None) == (store.backend == "postgresql")
