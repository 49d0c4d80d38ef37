"""Operations on leader and role leases (`leases`); a row is never deleted, so tokens never repeat."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from zeroloop.store.queries import dialect_insert
from zeroloop.store.schema import leases


def lock_lease(conn: Connection, name: str) -> dict[str, Any]:
    """Create the lease row if missing (free, token 0) and return it locked for this transaction.

    SQLite write transactions already hold the database lock (BEGIN IMMEDIATE); on
    PostgreSQL the row is locked FOR UPDATE so two contenders serialise on it.
    """
    values = {"name": name, "holder": None, "token": 0, "expires_at": 0.0, "acquired_at": 0.0}
    conn.execute(dialect_insert(conn, leases).values(**values).on_conflict_do_nothing(index_elements=["name"]))
    query = sa.select(leases).where(leases.c.name == name)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return dict(conn.execute(query).mappings().one())


def get_lease(conn: Connection, name: str) -> dict[str, Any] | None:
    """A lease row without locking it, or None if it was never taken."""
    row = conn.execute(sa.select(leases).where(leases.c.name == name)).mappings().first()
    return dict(row) if row is not None else None


def list_leases(conn: Connection) -> list[dict[str, Any]]:
    """Every lease row, ordered by name."""
    return [dict(row) for row in conn.execute(sa.select(leases).order_by(leases.c.name)).mappings()]


def write_lease(
    conn: Connection, name: str, *, holder: str | None, token: int, expires_at: float, acquired_at: float
) -> None:
    """Overwrite a locked lease row (see lock_lease)."""
    conn.execute(
        sa.update(leases)
        .where(leases.c.name == name)
        .values(holder=holder, token=token, expires_at=expires_at, acquired_at=acquired_at)
    )


def extend_lease(conn: Connection, name: str, holder: str, token: int, *, now: float, expires_at: float) -> bool:
    """Push the expiry of a lease still held by (holder, token) and unexpired at `now`; False otherwise."""
    result = conn.execute(
        sa.update(leases)
        .where(leases.c.name == name, leases.c.holder == holder, leases.c.token == token, leases.c.expires_at > now)
        .values(expires_at=expires_at)
    )
    return bool(result.rowcount)


def free_lease(conn: Connection, name: str, holder: str, token: int, *, now: float) -> bool:
    """Release a lease held by (holder, token), keeping its token; False when it was not held so.

    Its expiry becomes `now` (epoch seconds): how long a role has gone unheld is read from it.
    """
    result = conn.execute(
        sa.update(leases)
        .where(leases.c.name == name, leases.c.holder == holder, leases.c.token == token)
        .values(holder=None, expires_at=now)
    )
    return bool(result.rowcount)
