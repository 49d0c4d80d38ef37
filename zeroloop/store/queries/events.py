"""Operations on the durable event log."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from zeroloop.store.schema import events


def insert_event(conn: Connection, row: dict[str, Any]) -> tuple[int, bool]:
    """Append one event; return (id, inserted). A repeated dedup key returns the first id and False."""
    values = dict(row)
    if conn.dialect.name == "postgresql":
        values["txid"] = sa.text("pg_current_xact_id()::text::bigint")
        stmt: Any = postgresql.insert(events)
    else:
        stmt = sqlite.insert(events)
    if values.get("dedup_key") is None:
        return int(conn.execute(sa.insert(events).values(**values).returning(events.c.id)).scalar_one()), True
    inserted = conn.execute(
        stmt.values(**values).on_conflict_do_nothing(index_elements=["dedup_key"]).returning(events.c.id)
    ).scalar_one_or_none()
    if inserted is not None:
        return int(inserted), True
    existing = conn.execute(sa.select(events.c.id).where(events.c.dedup_key == values["dedup_key"])).scalar_one()
    return int(existing), False
