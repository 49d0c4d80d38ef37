"""Operations on the persisted state of supervised daemons (`daemons`), one row per (node, name)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from zeroloop.store.queries import dialect_insert
from zeroloop.store.schema import daemons


def upsert_daemon(conn: Connection, row: dict[str, Any]) -> None:
    """Insert or replace the row of one daemon on one node, in one statement (no duplicate key between writers)."""
    insert = dialect_insert(conn, daemons).values(**row)
    changes = {name: insert.excluded[name] for name in row if name not in ("node", "name")}
    conn.execute(insert.on_conflict_do_update(index_elements=["node", "name"], set_=changes))


def delete_node_daemons(conn: Connection, node: str) -> int:
    """Forget the daemon rows of a node that is gone for good; how many."""
    return int(conn.execute(sa.delete(daemons).where(daemons.c.node == node)).rowcount)


def list_daemons(conn: Connection, node: str | None = None) -> list[dict[str, Any]]:
    """Every daemon row (or one node's), ordered by node and name."""
    query = sa.select(daemons).order_by(daemons.c.node, daemons.c.name)
    if node is not None:
        query = query.where(daemons.c.node == node)
    return [dict(row) for row in conn.execute(query).mappings()]
