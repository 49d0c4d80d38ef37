"""Operations on the nodes table: registration, heartbeats, status changes."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from zeroloop.store.queries import dialect_insert
from zeroloop.store.schema import nodes


def get_node(conn: Connection, node_id: str) -> dict[str, Any] | None:
    """One node's row, or None when it never registered."""
    row = conn.execute(sa.select(nodes).where(nodes.c.id == node_id)).mappings().first()
    return dict(row) if row is not None else None


def list_nodes(conn: Connection, statuses: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Every node (or those in `statuses`), ordered by id."""
    query = sa.select(nodes).order_by(nodes.c.id)
    if statuses is not None:
        query = query.where(nodes.c.status.in_(statuses))
    return [dict(row) for row in conn.execute(query).mappings()]


def upsert_node(conn: Connection, row: dict[str, Any]) -> None:
    """Insert a node or replace its description, in one statement (no duplicate key between writers)."""
    insert = dialect_insert(conn, nodes).values(**row)
    changes = {name: insert.excluded[name] for name in row if name != "id"}
    conn.execute(insert.on_conflict_do_update(index_elements=["id"], set_=changes))


def record_heartbeat(conn: Connection, node_id: str, utilisation: dict[str, Any], now: float) -> str | None:
    """Store a heartbeat (now: epoch seconds); return the node's status, or None if it is unknown."""
    status = conn.execute(sa.select(nodes.c.status).where(nodes.c.id == node_id)).scalar_one_or_none()
    if status is None:
        return None
    conn.execute(sa.update(nodes).where(nodes.c.id == node_id).values(utilisation=utilisation, heartbeat_at=now))
    return str(status)


def set_node_status(
    conn: Connection,
    node_id: str,
    status: str,
    now: float,
    *,
    expected: str,
    billing: bool | None = None,
    **values: Any,
) -> bool:
    """Move a node from `expected` to `status`; False when it was not in `expected` (a lost race).

    `billing` True opens a billed interval at `now` (if none is open); False closes the open
    one, adding its seconds to `billed_s`; None leaves billing as it is. `values` sets other columns.
    """
    changes: dict[str, Any] = {"status": status, "status_changed_at": now, **values}
    if billing is True:
        changes["billing_since"] = sa.func.coalesce(nodes.c.billing_since, now)
    elif billing is False:
        changes["billed_s"] = nodes.c.billed_s + sa.case(
            (nodes.c.billing_since.is_(None), 0.0), else_=now - nodes.c.billing_since
        )
        changes["billing_since"] = None
    result = conn.execute(sa.update(nodes).where(nodes.c.id == node_id, nodes.c.status == expected).values(**changes))
    return bool(result.rowcount)


def insert_node(conn: Connection, row: dict[str, Any]) -> None:
    """Add a node row (a launch request, before the machine exists)."""
    conn.execute(sa.insert(nodes).values(**row))


def update_node(conn: Connection, node_id: str, **values: Any) -> None:
    """Set columns of one node (e.g. the provider id once a launch is accepted)."""
    conn.execute(sa.update(nodes).where(nodes.c.id == node_id).values(**values))


def pool_nodes(conn: Connection, pool: str, statuses: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """The nodes a pool launched (or those in `statuses`), by id."""
    query = sa.select(nodes).where(nodes.c.pool == pool).order_by(nodes.c.id)
    if statuses is not None:
        query = query.where(nodes.c.status.in_(statuses))
    return [dict(row) for row in conn.execute(query).mappings()]


def pool_nodes_current(conn: Connection, pool: str) -> list[dict[str, Any]]:
    """A pool's nodes that are not terminated, and its most recently launched terminated one, by id.

    What a scaling decision reads (counts, the run of failed launches, the last launch),
    however long the pool's history: a terminated node older than the newest terminated
    one neither counts nor ends a run of failures, nor is the last launch.
    """
    current = sa.select(nodes).where(nodes.c.pool == pool, nodes.c.status != "terminated")
    newest = (
        sa.select(nodes.c.id)
        .where(nodes.c.pool == pool, nodes.c.status == "terminated")
        .order_by(nodes.c.launched_at.desc().nulls_last(), nodes.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    query = current.union_all(sa.select(nodes).where(nodes.c.id == newest))
    rows = [dict(row) for row in conn.execute(query).mappings()]
    return sorted(rows, key=lambda row: str(row["id"]))


def set_idle_since(conn: Connection, node_id: str, idle_since: float | None) -> None:
    """Record when a node became idle (epoch seconds), or clear it when it works again."""
    conn.execute(sa.update(nodes).where(nodes.c.id == node_id).values(idle_since=idle_since))


def silent_nodes(conn: Connection, heard_before: float, statuses: tuple[str, ...]) -> list[dict[str, Any]]:
    """Nodes in `statuses` whose last heartbeat is older than `heard_before` (epoch seconds)."""
    query = (
        sa.select(nodes).where(nodes.c.status.in_(statuses), nodes.c.heartbeat_at < heard_before).order_by(nodes.c.id)
    )
    return [dict(row) for row in conn.execute(query).mappings()]
