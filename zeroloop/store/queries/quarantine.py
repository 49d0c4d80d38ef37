"""Operations on node quarantines: an admin's decision to keep a node's results out of training windows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from zeroloop.store.schema import artifacts, jobs, node_quarantines


def quarantine_node(conn: Connection, *, node: str, reason: str, actor: str, now: float) -> int | None:
    """Record that `node`'s results are quarantined from `now` on; its id, or None when one is already in force."""
    if active_quarantine(conn, node) is not None:
        return None
    row = {"node": node, "reason": reason, "actor": actor, "created_at": now}
    return int(conn.execute(sa.insert(node_quarantines).values(**row).returning(node_quarantines.c.id)).scalar_one())


def lift_quarantine(conn: Connection, *, node: str, actor: str, now: float) -> bool:
    """End the quarantine in force on `node`; False when there is none."""
    query = (
        sa.update(node_quarantines)
        .where(node_quarantines.c.node == node, node_quarantines.c.lifted_at.is_(None))
        .values(lifted_at=now, lifted_by=actor)
    )
    return bool(conn.execute(query).rowcount)


def active_quarantine(conn: Connection, node: str) -> dict[str, Any] | None:
    """The quarantine in force on `node`, or None."""
    query = sa.select(node_quarantines).where(node_quarantines.c.node == node, node_quarantines.c.lifted_at.is_(None))
    row = conn.execute(query).mappings().first()
    return dict(row) if row else None


def list_quarantines(conn: Connection, *, active_only: bool = False) -> list[dict[str, Any]]:
    """Every quarantine decision (or those in force), newest first."""
    query = sa.select(node_quarantines).order_by(node_quarantines.c.created_at.desc(), node_quarantines.c.id.desc())
    if active_only:
        query = query.where(node_quarantines.c.lifted_at.is_(None))
    return [dict(row) for row in conn.execute(query).mappings()]


def quarantined_artifacts(conn: Connection, sha256s: Sequence[str]) -> set[str]:
    """Those of `sha256s` produced by a job whose node is under quarantine now (kept out of training windows)."""
    if not sha256s:
        return set()
    held = sa.select(node_quarantines.c.node).where(node_quarantines.c.lifted_at.is_(None))
    query = (
        sa.select(artifacts.c.sha256)
        .join(jobs, jobs.c.id == artifacts.c.producer_job_id)
        .where(artifacts.c.sha256.in_(list(sha256s)), jobs.c.lease_node.in_(held))
    )
    return {str(sha) for sha in conn.execute(query).scalars()}
