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
    _ensure(conn, name)
    query = sa.select(leases).where(leases.c.name == name)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return dict(conn.execute(query).mappings().one())


def try_lock_lease(conn: Connection, name: str) -> dict[str, Any] | None:
    """Like `lock_lease`, but None at once when another transaction holds the row locked (PostgreSQL).

    On SQLite the write transaction already excludes every other writer: never None there.
    """
    _ensure(conn, name)
    query = sa.select(leases).where(leases.c.name == name)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    row = conn.execute(query).mappings().first()
    return dict(row) if row is not None else None


def end_lease_lockers(conn: Connection, name: str) -> list[int]:
    """End the PostgreSQL sessions whose open transaction holds the lease row locked; their pids.

    For a contender that found the lease expired while its row stays locked: the holder is
    paused inside a transaction (SIGSTOP, a frozen VM), and whatever it would commit on
    waking comes after its lease ran out, which fencing must refuse anyway. Ending its
    session releases every lock it holds at once, instead of after
    `idle_in_transaction_session_timeout`. The locker is found by the row's xmax (the
    transaction that locked or updated it). Nothing on SQLite, whose writers never pause
    holding the lock for long (`store.write_turn_max_s`).
    """
    if conn.dialect.name != "postgresql":
        return []
    found = conn.execute(
        sa.text(
            "SELECT a.pid, pg_terminate_backend(a.pid) FROM pg_stat_activity a JOIN leases l ON a.backend_xid = l.xmax "
            "WHERE l.name = :name AND a.pid <> pg_backend_pid()"
        ),
        {"name": name},
    ).all()
    return [int(pid) for pid, ended in found if ended]


def set_lock_timeout(conn: Connection, seconds: float) -> None:
    """Bound how long this PostgreSQL transaction waits for a lock (a lock wait past it fails the transaction)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text(f"SET LOCAL lock_timeout = {max(1, int(seconds * 1000))}"))


def _ensure(conn: Connection, name: str) -> None:
    values = {"name": name, "holder": None, "token": 0, "expires_at": 0.0, "acquired_at": 0.0}
    conn.execute(dialect_insert(conn, leases).values(**values).on_conflict_do_nothing(index_elements=["name"]))


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
