"""Operations on the dead-letter table: events a consumer's handler kept failing on."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from zeroloop.store.schema import dead_letters


def insert_dead_letter(
    conn: Connection,
    *,
    event_id: int,
    consumer: str,
    status: str,
    attempts: int,
    error: str,
    traceback: str,
    now: float,
    next_retry_at: float | None,
) -> int:
    """Record that `consumer` gave up on event `event_id`; return the dead letter's id."""
    stmt = (
        sa.insert(dead_letters)
        .values(
            event_id=event_id,
            consumer=consumer,
            status=status,
            attempts=attempts,
            error=error,
            traceback=traceback,
            created_at=now,
            updated_at=now,
            next_retry_at=next_retry_at,
        )
        .returning(dead_letters.c.id)
    )
    return int(conn.execute(stmt).scalar_one())


def get_dead_letter(conn: Connection, letter_id: int) -> RowMapping | None:
    """One dead letter by id, or None."""
    return conn.execute(sa.select(dead_letters).where(dead_letters.c.id == letter_id)).mappings().first()


def list_dead_letters(
    conn: Connection, *, statuses: Sequence[str] = (), consumer: str | None = None, limit: int = 100
) -> list[RowMapping]:
    """Dead letters, newest first, optionally only some statuses or one consumer."""
    stmt = sa.select(dead_letters)
    if statuses:
        stmt = stmt.where(dead_letters.c.status.in_(list(statuses)))
    if consumer is not None:
        stmt = stmt.where(dead_letters.c.consumer == consumer)
    return list(conn.execute(stmt.order_by(dead_letters.c.id.desc()).limit(limit)).mappings())


def due_dead_letters(
    conn: Connection, *, consumers: Sequence[str], status: str, now: float, limit: int
) -> list[RowMapping]:
    """Dead letters of `consumers` in `status` whose next retry time has come, oldest first."""
    stmt = (
        sa.select(dead_letters)
        .where(
            dead_letters.c.consumer.in_(list(consumers)),
            dead_letters.c.status == status,
            dead_letters.c.next_retry_at <= now,
        )
        .order_by(dead_letters.c.id)
        .limit(limit)
    )
    return list(conn.execute(stmt).mappings())


def update_dead_letter(
    conn: Connection,
    letter_id: int,
    *,
    expect_status: str,
    status: str,
    now: float,
    next_retry_at: float | None,
    attempts: int | None = None,
    error: str | None = None,
    traceback: str | None = None,
) -> bool:
    """Move a dead letter from `expect_status` to `status`; False if it was not in `expect_status`."""
    values: dict[str, object] = {"status": status, "updated_at": now, "next_retry_at": next_retry_at}
    if attempts is not None:
        values["attempts"] = attempts
    if error is not None:
        values["error"] = error
    if traceback is not None:
        values["traceback"] = traceback
    stmt = sa.update(dead_letters).where(dead_letters.c.id == letter_id, dead_letters.c.status == expect_status)
    return bool(conn.execute(stmt.values(**values)).rowcount)


def pending_event_ids(conn: Connection, *, statuses: Sequence[str]) -> list[int]:
    """Ids of events that dead letters in `statuses` still need (retention keeps them)."""
    stmt = sa.select(dead_letters.c.event_id).where(dead_letters.c.status.in_(list(statuses))).distinct()
    return [int(event_id) for event_id in conn.execute(stmt).scalars()]


def count_by_status(conn: Connection) -> dict[str, int]:
    """Dead letters per status."""
    rows = conn.execute(sa.select(dead_letters.c.status, sa.func.count()).group_by(dead_letters.c.status))
    return {str(status): int(count) for status, count in rows}
