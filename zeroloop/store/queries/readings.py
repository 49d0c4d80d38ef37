"""Operations on the readings table: what the leader read of the cluster at a moment (zeroloop.control.readings)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from zeroloop.store.schema import readings


def insert_reading(conn: Connection, at: float, figures: dict[str, Any]) -> int:
    """Record one reading taken at `at` (epoch seconds); return its id."""
    return int(conn.execute(sa.insert(readings).values(at=at, figures=figures).returning(readings.c.id)).scalar_one())


def latest_reading(conn: Connection) -> RowMapping | None:
    """The newest reading, or None before the first."""
    query = sa.select(readings).order_by(readings.c.at.desc(), readings.c.id.desc()).limit(1)
    return conn.execute(query).mappings().first()


def list_readings(
    conn: Connection, *, since: float, until: float | None = None, limit: int = 20_000
) -> list[RowMapping]:
    """Readings taken at or after `since` (and at or before `until`), oldest first, at most the newest `limit`."""
    query = sa.select(readings).where(readings.c.at >= since)
    if until is not None:
        query = query.where(readings.c.at <= until)
    newest = list(conn.execute(query.order_by(readings.c.at.desc(), readings.c.id.desc()).limit(limit)).mappings())
    return newest[::-1]


def reading_before(conn: Connection, at: float) -> RowMapping | None:
    """The newest reading taken at or before `at` (epoch seconds), or None."""
    query = sa.select(readings).where(readings.c.at <= at).order_by(readings.c.at.desc(), readings.c.id.desc())
    return conn.execute(query.limit(1)).mappings().first()


def thin_readings(conn: Connection, *, before: float, bucket_s: float) -> int:
    """Keep only the first reading of each `bucket_s`-long span among those taken before `before`; return how many went.

    Buckets are aligned to the epoch, so thinning again deletes nothing more.
    """
    rows = conn.execute(
        sa.select(readings.c.id, readings.c.at).where(readings.c.at < before).order_by(readings.c.at, readings.c.id)
    ).all()
    seen: set[int] = set()
    doomed: list[int] = []
    for row_id, at in rows:
        bucket = int(float(at) // bucket_s)
        if bucket in seen:
            doomed.append(int(row_id))
        seen.add(bucket)
    for start in range(0, len(doomed), 500):
        conn.execute(sa.delete(readings).where(readings.c.id.in_(doomed[start : start + 500])))
    return len(doomed)


def reading_after(conn: Connection, at: float) -> RowMapping | None:
    """The oldest reading taken at or after `at` (epoch seconds), or None."""
    query = sa.select(readings).where(readings.c.at >= at).order_by(readings.c.at, readings.c.id)
    return conn.execute(query.limit(1)).mappings().first()


def reading_times(conn: Connection, *, since: float, until: float | None = None) -> list[tuple[int, float]]:
    """The id and time of every reading taken at or after `since` (and at or before `until`), oldest first."""
    query = sa.select(readings.c.id, readings.c.at).where(readings.c.at >= since)
    if until is not None:
        query = query.where(readings.c.at <= until)
    return [(int(row_id), float(at)) for row_id, at in conn.execute(query.order_by(readings.c.at, readings.c.id))]


def readings_by_id(conn: Connection, ids: list[int]) -> list[RowMapping]:
    """The readings of `ids`, oldest first."""
    found: list[RowMapping] = []
    for start in range(0, len(ids), 500):
        query = sa.select(readings).where(readings.c.id.in_(ids[start : start + 500]))
        found += list(conn.execute(query).mappings())
    return sorted(found, key=lambda row: (float(row["at"]), int(row["id"])))
