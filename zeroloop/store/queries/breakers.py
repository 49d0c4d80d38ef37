"""Operations on circuit breakers (`circuit_breakers`), keyed `node:<id>` or `stage:<name>`."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from zeroloop.store.schema import circuit_breakers


def get_breaker(conn: Connection, key: str, *, lock: bool = False) -> dict[str, Any] | None:
    """One breaker row (locked FOR UPDATE on PostgreSQL when `lock`), or None when it never tripped."""
    query = sa.select(circuit_breakers).where(circuit_breakers.c.key == key)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    return dict(row) if row is not None else None


def upsert_breaker(conn: Connection, row: dict[str, Any]) -> None:
    """Insert or replace one breaker row."""
    if not conn.execute(sa.update(circuit_breakers).where(circuit_breakers.c.key == row["key"]).values(**row)).rowcount:
        conn.execute(sa.insert(circuit_breakers).values(**row))


def list_breakers(conn: Connection, states: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Every breaker (or those in `states`), ordered by key."""
    query = sa.select(circuit_breakers).order_by(circuit_breakers.c.key)
    if states is not None:
        query = query.where(circuit_breakers.c.state.in_(states))
    return [dict(row) for row in conn.execute(query).mappings()]


def delete_breaker(conn: Connection, key: str) -> None:
    """Forget a breaker: the next failure starts it afresh, closed."""
    conn.execute(sa.delete(circuit_breakers).where(circuit_breakers.c.key == key))
