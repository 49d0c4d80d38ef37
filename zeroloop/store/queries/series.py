"""Read-only aggregates behind the dashboard's charts: the queue now, finished jobs, a round's jobs, decisions.

Times are epoch seconds. Nothing here writes; zeroloop.control.readings and
zeroloop.control.series turn these rows into figures and series.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from zeroloop.store.schema import decisions, jobs


def queue_now(conn: Connection, now: float) -> dict[str, dict[str, Any]]:
    """Per job type: queued and running jobs, the queued ones due now (`due`), and when the oldest of those fell due.

    A queued job is due when its `run_after` has passed and it waits on no other job; the
    oldest due job's age is the wait a new job of its type has ahead of it at least. Each
    query names one status, so the partial indexes of the queued and running jobs serve it
    and the finished jobs are never read.
    """
    found: dict[str, dict[str, Any]] = {}

    def entry(job_type: str) -> dict[str, Any]:
        return found.setdefault(job_type, {"queued": 0, "running": 0, "due": 0, "oldest_due_at": None})

    for status in ("queued", "running"):
        counts = sa.select(jobs.c.type, sa.func.count()).where(jobs.c.status == status).group_by(jobs.c.type)
        for job_type, count in conn.execute(counts):
            entry(str(job_type))[status] = int(count)
    due = (
        sa.select(jobs.c.type, sa.func.count(), sa.func.min(jobs.c.run_after))
        .where(jobs.c.status == "queued", jobs.c.run_after <= now, jobs.c.waiting_on == 0)
        .group_by(jobs.c.type)
    )
    for job_type, count, oldest in conn.execute(due):
        entry(str(job_type)).update(due=int(count), oldest_due_at=None if oldest is None else float(oldest))
    return found


# What a finished job contributes to the readings: its config key, type, node, times and result.
_FINISHED_COLUMNS = (
    jobs.c.id,
    jobs.c.config_key,
    jobs.c.type,
    jobs.c.lease_node,
    jobs.c.run_after,
    jobs.c.claimed_at,
    jobs.c.finished_at,
    jobs.c.result,
)


def finished_jobs(conn: Connection, *, after: float, until: float, limit: int) -> list[RowMapping]:
    """The first `limit` jobs that ran and finished in (after, until], by finish: config key, type, node, times, result.

    `ix_jobs_finished_at` serves the range, so the cost follows the jobs in it, not the table.
    """
    query = (
        sa.select(*_FINISHED_COLUMNS)
        .where(jobs.c.finished_at > after, jobs.c.finished_at <= until, jobs.c.claimed_at.is_not(None))
        .order_by(jobs.c.finished_at, jobs.c.id)
        .limit(limit)
    )
    return list(conn.execute(query).mappings())


def finished_at_exactly(conn: Connection, at: float) -> list[RowMapping]:
    """The jobs that ran and finished at exactly `at` (epoch seconds), as `finished_jobs` gives them."""
    query = sa.select(*_FINISHED_COLUMNS).where(jobs.c.finished_at == at, jobs.c.claimed_at.is_not(None))
    return list(conn.execute(query.order_by(jobs.c.id)).mappings())


def completed_jobs_of(conn: Connection, config_key: str, job_types: Sequence[str], *, limit: int) -> list[RowMapping]:
    """The newest `limit` completed jobs of `config_key` of the given types, oldest first: payload, result, times."""
    query = (
        sa.select(
            jobs.c.id,
            jobs.c.type,
            jobs.c.payload,
            jobs.c.result,
            jobs.c.created_at,
            jobs.c.claimed_at,
            jobs.c.finished_at,
        )
        .where(jobs.c.config_key == config_key, jobs.c.type.in_(list(job_types)), jobs.c.status == "completed")
        .order_by(jobs.c.id.desc())
        .limit(limit)
    )
    return list(conn.execute(query).mappings())[::-1]


def decisions_of_kind(conn: Connection, config_key: str, kinds: Sequence[str], *, limit: int) -> list[RowMapping]:
    """The newest `limit` decisions of `config_key` of the given kinds, newest first."""
    query = (
        sa.select(decisions)
        .where(decisions.c.config_key == config_key, decisions.c.kind.in_(list(kinds)))
        .order_by(decisions.c.id.desc())
        .limit(limit)
    )
    return list(conn.execute(query).mappings())


def decisions_like(conn: Connection, prefix: str, *, limit: int) -> list[RowMapping]:
    """The newest `limit` decisions whose config key starts with `prefix` (e.g. `fleet:`), newest first."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    query = (
        sa.select(decisions)
        .where(decisions.c.config_key.like(f"{escaped}%", escape="\\"))
        .order_by(decisions.c.id.desc())
        .limit(limit)
    )
    return list(conn.execute(query).mappings())
