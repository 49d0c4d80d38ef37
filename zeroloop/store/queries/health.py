"""Read-only aggregates the health score and the status view need (jobs and events by kind)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from zeroloop.store.schema import events, jobs


def count_events(conn: Connection, types: tuple[str, ...], since: float) -> dict[str, int]:
    """How many events of each of `types` were published at or after `since` (epoch seconds)."""
    query = (
        sa.select(events.c.type, sa.func.count())
        .where(events.c.type.in_(types), events.c.created_at >= since)
        .group_by(events.c.type)
    )
    counts = {event_type: 0 for event_type in types}
    counts.update({str(event_type): int(count) for event_type, count in conn.execute(query)})
    return counts


def job_counts(conn: Connection) -> dict[tuple[str, str], int]:
    """How many jobs there are per (type, status)."""
    query = sa.select(jobs.c.type, jobs.c.status, sa.func.count()).group_by(jobs.c.type, jobs.c.status)
    return {(str(job_type), str(status)): int(count) for job_type, status, count in conn.execute(query)}


def leased_jobs_by_node(conn: Connection, now: float) -> dict[str, int]:
    """How many jobs each node holds an unexpired lease on at `now` (epoch seconds)."""
    query = (
        sa.select(jobs.c.lease_node, sa.func.count())
        .where(jobs.c.lease_node.is_not(None), jobs.c.lease_expires_at > now, jobs.c.finished_at.is_(None))
        .group_by(jobs.c.lease_node)
    )
    return {str(node): int(count) for node, count in conn.execute(query)}


def runnable_job_count(conn: Connection, now: float, statuses: tuple[str, ...] = ("queued",)) -> int:
    """Jobs waiting in `statuses` whose run_after has come (now: epoch seconds): the pending work."""
    query = sa.select(sa.func.count()).select_from(jobs).where(jobs.c.status.in_(statuses), jobs.c.run_after <= now)
    return int(conn.execute(query).scalar_one())


def last_job_by_node(conn: Connection, node_ids: list[str]) -> dict[str, float]:
    """When each of `node_ids` last claimed or finished a job (epoch seconds); nodes that ran none are absent."""
    if not node_ids:
        return {}
    query = (
        sa.select(jobs.c.lease_node, sa.func.max(jobs.c.claimed_at), sa.func.max(jobs.c.finished_at))
        .where(jobs.c.lease_node.in_(node_ids))
        .group_by(jobs.c.lease_node)
    )
    found = {}
    for node, claimed, finished in conn.execute(query):
        moments = [float(at) for at in (claimed, finished) if at is not None]
        if moments:
            found[str(node)] = max(moments)
    return found
