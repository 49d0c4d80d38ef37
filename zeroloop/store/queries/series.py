"""Read-only aggregates behind the dashboard's charts: the queue now, waits, finished jobs, a round's jobs, decisions.

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
    oldest due job's age is the wait a new job of its type has ahead of it at least.
    """
    found: dict[str, dict[str, Any]] = {}
    counts = sa.select(jobs.c.type, jobs.c.status, sa.func.count()).where(jobs.c.status.in_(("queued", "running")))
    for job_type, status, count in conn.execute(counts.group_by(jobs.c.type, jobs.c.status)):
        entry = found.setdefault(str(job_type), {"queued": 0, "running": 0, "due": 0, "oldest_due_at": None})
        entry[str(status)] = int(count)
    due = (
        sa.select(jobs.c.type, sa.func.count(), sa.func.min(jobs.c.run_after))
        .where(jobs.c.status == "queued", jobs.c.run_after <= now, jobs.c.waiting_on == 0)
        .group_by(jobs.c.type)
    )
    for job_type, count, oldest in conn.execute(due):
        entry = found.setdefault(str(job_type), {"queued": 0, "running": 0, "due": 0, "oldest_due_at": None})
        entry["due"] = int(count)
        entry["oldest_due_at"] = None if oldest is None else float(oldest)
    return found


def claim_waits(conn: Connection, *, after: float, until: float) -> dict[str, dict[str, float]]:
    """Per job type, of the jobs claimed in (after, until]: how many, and their mean and longest wait (seconds).

    A job's wait is from when it fell due (`run_after`: its creation, or the end of a retry's
    backoff) to its last claim.
    """
    wait = jobs.c.claimed_at - jobs.c.run_after
    query = (
        sa.select(jobs.c.type, sa.func.count(), sa.func.avg(wait), sa.func.max(wait))
        .where(jobs.c.claimed_at > after, jobs.c.claimed_at <= until)
        .group_by(jobs.c.type)
    )
    return {
        str(job_type): {
            "claimed": int(count),
            "mean_wait_s": max(0.0, float(mean)),
            "max_wait_s": max(0.0, float(most)),
        }
        for job_type, count, mean, most in conn.execute(query)
    }


def finished_jobs(conn: Connection, *, after: float, until: float) -> list[RowMapping]:
    """Jobs that ran and finished in (after, until]: config key, type, node, claim and finish times, result."""
    query = (
        sa.select(
            jobs.c.id,
            jobs.c.config_key,
            jobs.c.type,
            jobs.c.lease_node,
            jobs.c.claimed_at,
            jobs.c.finished_at,
            jobs.c.result,
        )
        .where(jobs.c.finished_at > after, jobs.c.finished_at <= until, jobs.c.claimed_at.is_not(None))
        .order_by(jobs.c.finished_at, jobs.c.id)
    )
    return list(conn.execute(query).mappings())


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
