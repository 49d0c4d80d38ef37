"""Operations on the persisted state of supervised daemons (`daemons`), one row per (node, name)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from zeroloop.store.schema import daemons


def upsert_daemon(conn: Connection, row: dict[str, Any]) -> None:
    """Insert or replace the row of one daemon on one node."""
    key = (daemons.c.node == row["node"], daemons.c.name == row["name"])
    if not conn.execute(sa.update(daemons).where(*key).values(**row)).rowcount:
        conn.execute(sa.insert(daemons).values(**row))


def list_daemons(conn: Connection, node: str | None = None) -> list[dict[str, Any]]:
    """Every daemon row (or one node's), ordered by node and name."""
    query = sa.select(daemons).order_by(daemons.c.node, daemons.c.name)
    if node is not None:
        query = query.where(daemons.c.node == node)
    return [dict(row) for row in conn.execute(query).mappings()]
