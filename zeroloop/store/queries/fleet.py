"""Read-only aggregates the autoscaler needs: queued work by what it requires, and how long jobs take."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from zeroloop.store.schema import jobs, nodes


def queued_demand(conn: Connection, now: float) -> list[dict[str, Any]]:
    """Runnable queued jobs grouped by type and requirements: type, need_gpus, need_memory_bytes, need_labels, count.

    Jobs aimed at one node (target_node) are left out: no new machine can run them.
    """
    query = (
        sa.select(
            jobs.c.type,
            jobs.c.need_gpus,
            jobs.c.need_memory_bytes,
            jobs.c.need_labels,
            sa.func.count().label("count"),
        )
        .where(
            jobs.c.status == "queued",
            jobs.c.run_after <= now,
            jobs.c.waiting_on == 0,
            jobs.c.target_node.is_(None),
        )
        .group_by(jobs.c.type, jobs.c.need_gpus, jobs.c.need_memory_bytes, jobs.c.need_labels)
    )
    return [dict(row) for row in conn.execute(query).mappings()]


def running_by_node(conn: Connection) -> dict[str, int]:
    """How many jobs each node is running now."""
    query = (
        sa.select(jobs.c.lease_node, sa.func.count())
        .where(jobs.c.status == "running", jobs.c.lease_node.is_not(None))
        .group_by(jobs.c.lease_node)
    )
    return {str(node): int(count) for node, count in conn.execute(query)}


def mean_durations(conn: Connection, since: float) -> dict[str, float]:
    """Mean run time (seconds, claim to finish) of the jobs of each type completed since `since` (epoch seconds)."""
    query = (
        sa.select(jobs.c.type, sa.func.avg(jobs.c.finished_at - jobs.c.claimed_at))
        .where(jobs.c.status == "completed", jobs.c.finished_at >= since, jobs.c.claimed_at.is_not(None))
        .group_by(jobs.c.type)
    )
    return {str(job_type): float(mean) for job_type, mean in conn.execute(query) if mean is not None}


def config_costs(conn: Connection) -> dict[str, float]:
    """Cost (currency units) per config key: each finished or running job's time on its node at the node's price.

    A node running several jobs at once splits its price among its slots.
    """
    end = sa.func.coalesce(jobs.c.finished_at, jobs.c.updated_at)
    share = (end - jobs.c.claimed_at) * sa.func.coalesce(nodes.c.cost_per_hour, 0.0) / 3600.0 / nodes.c.slots
    query = (
        sa.select(jobs.c.config_key, sa.func.sum(share))
        .select_from(jobs.join(nodes, nodes.c.id == jobs.c.lease_node))
        .where(jobs.c.claimed_at.is_not(None))
        .group_by(jobs.c.config_key)
    )
    return {str(key): float(total or 0.0) for key, total in conn.execute(query)}
