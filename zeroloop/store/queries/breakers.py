"""Operations on circuit breakers (`circuit_breakers`), keyed `node:<id>` or `stage:<name>`."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from zeroloop.store.queries import dialect_insert
from zeroloop.store.schema import circuit_breakers


def get_breaker(conn: Connection, key: str, *, lock: bool = False) -> dict[str, Any] | None:
    """One breaker row (locked FOR UPDATE on PostgreSQL when `lock`), or None when it never tripped."""
    query = sa.select(circuit_breakers).where(circuit_breakers.c.key == key)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    return dict(row) if row is not None else None


def upsert_breaker(conn: Connection, row: dict[str, Any]) -> None:
    """Insert or replace one breaker row, in one statement: two writers creating it at once both succeed."""
    insert = dialect_insert(conn, circuit_breakers).values(**row)
    changes = {name: insert.excluded[name] for name in row if name != "key"}
    conn.execute(insert.on_conflict_do_update(index_elements=["key"], set_=changes))


def lock_breaker(conn: Connection, key: str, *, now: float) -> dict[str, Any]:
    """The breaker row of `key`, created closed if missing, locked for this transaction (FOR UPDATE on PostgreSQL).

    Creating it with ON CONFLICT DO NOTHING first means two writers never both insert it:
    the second waits on the first's row lock and then reads what the first wrote.
    """
    fresh = {"key": key, "state": "closed", "failures": 0, "successes": 0, "opened_at": None, "updated_at": now}
    conn.execute(dialect_insert(conn, circuit_breakers).values(**fresh).on_conflict_do_nothing(index_elements=["key"]))
    query = sa.select(circuit_breakers).where(circuit_breakers.c.key == key)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return dict(conn.execute(query).mappings().one())


def list_breakers(conn: Connection, states: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Every breaker (or those in `states`), ordered by key."""
    query = sa.select(circuit_breakers).order_by(circuit_breakers.c.key)
    if states is not None:
        query = query.where(circuit_breakers.c.state.in_(states))
    return [dict(row) for row in conn.execute(query).mappings()]


def delete_breaker(conn: Connection, key: str) -> None:
    """Forget a breaker: the next failure starts it afresh, closed."""
    conn.execute(sa.delete(circuit_breakers).where(circuit_breakers.c.key == key))
