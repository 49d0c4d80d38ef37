"""Operations on the job lifecycle counters per config key and job type."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from zeroloop.store.schema import job_stats

COUNTERS = ("queued", "claimed", "completed", "failed", "expired", "dead", "cancelled")


def bump(conn: Connection, config_key: str, job_type: str, counter: str, now: float) -> None:
    """Add one to a counter, creating the row at zero first."""
    if counter not in COUNTERS:
        raise ValueError(f"unknown job counter {counter!r}")
    column = job_stats.c[counter]
    where = (job_stats.c.config_key == config_key, job_stats.c.job_type == job_type)
    updated = conn.execute(sa.update(job_stats).where(*where).values({column: column + 1, "updated_at": now}))
    if updated.rowcount == 0:
        row: dict[str, Any] = dict.fromkeys(COUNTERS, 0)
        row.update({counter: 1, "config_key": config_key, "job_type": job_type, "updated_at": now})
        conn.execute(sa.insert(job_stats).values(**row))


def all_stats(conn: Connection) -> list[RowMapping]:
    """Every counter row, by config key and job type."""
    query = sa.select(job_stats).order_by(job_stats.c.config_key, job_stats.c.job_type)
    return list(conn.execute(query).mappings())
