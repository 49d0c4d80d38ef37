"""Operations on durable consumers: their cursors in the event log, and their delivery counters."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from zeroloop.store.queries import dialect_insert
from zeroloop.store.queries.events import Position
from zeroloop.store.schema import consumers, event_metrics


def ensure_consumer(
    conn: Connection,
    name: str,
    *,
    types: Sequence[str],
    config_keys: Sequence[str] | None,
    node: str,
    start: Position,
    now: float,
) -> Position:
    """Register consumer `name` at position `start` unless it exists; update its filter; return its cursor."""
    values = {
        "name": name,
        "cursor": start[1],
        "cursor_txid": start[0],
        "types": sorted(types),
        "config_keys": sorted(config_keys) if config_keys is not None else None,
        "node": node,
        "created_at": now,
        "updated_at": now,
    }
    stmt = dialect_insert(conn, consumers).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["name"],
        set_={"types": stmt.excluded.types, "config_keys": stmt.excluded.config_keys, "node": stmt.excluded.node},
    )
    conn.execute(stmt)
    cursor = get_cursor(conn, name)
    assert cursor is not None
    return cursor


def get_cursor(conn: Connection, name: str) -> Position | None:
    """The position consumer `name` has handled up to, or None if it does not exist."""
    row = conn.execute(sa.select(consumers.c.cursor_txid, consumers.c.cursor).where(consumers.c.name == name)).first()
    return (int(row[0]), int(row[1])) if row else None


def advance_cursor(conn: Connection, name: str, position: Position, *, now: float) -> None:
    """Move consumer `name`'s cursor forward to `position`; never moves it backwards."""
    forward = sa.tuple_(consumers.c.cursor_txid, consumers.c.cursor) < sa.tuple_(
        sa.literal(position[0]), sa.literal(position[1])
    )
    conn.execute(
        sa.update(consumers)
        .where(consumers.c.name == name, forward)
        .values(cursor=position[1], cursor_txid=position[0], updated_at=now)
    )


def reset_cursor(conn: Connection, name: str, position: Position, *, now: float) -> bool:
    """Set consumer `name`'s cursor to `position`, backwards too (replay); False if there is no such consumer."""
    result = conn.execute(
        sa.update(consumers)
        .where(consumers.c.name == name)
        .values(cursor=position[1], cursor_txid=position[0], updated_at=now)
    )
    return bool(result.rowcount)


def list_consumers(conn: Connection) -> list[RowMapping]:
    """Every durable consumer, by name."""
    return list(conn.execute(sa.select(consumers).order_by(consumers.c.name)).mappings())


def slowest_cursor(conn: Connection) -> Position | None:
    """The smallest cursor of all consumers, or None when there are none."""
    row = conn.execute(
        sa.select(consumers.c.cursor_txid, consumers.c.cursor)
        .order_by(consumers.c.cursor_txid, consumers.c.cursor)
        .limit(1)
    ).first()
    return (int(row[0]), int(row[1])) if row else None


def delete_consumer(conn: Connection, name: str) -> bool:
    """Forget consumer `name` (its cursor no longer holds back retention); False if absent."""
    return bool(conn.execute(sa.delete(consumers).where(consumers.c.name == name)).rowcount)


def bump_metrics(conn: Connection, consumer: str, counts: dict[tuple[str, str], int]) -> None:
    """Add `counts` {(event_type, counter): n} to consumer's counters (counter: delivered, failed or dead)."""
    per_type: dict[str, dict[str, int]] = {}
    for (event_type, counter), amount in counts.items():
        per_type.setdefault(event_type, {"delivered": 0, "failed": 0, "dead": 0})[counter] += amount
    for event_type, added in sorted(per_type.items()):
        stmt = dialect_insert(conn, event_metrics).values(
            event_type=event_type, consumer=consumer, published=0, **added
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["event_type", "consumer"],
                set_={name: getattr(event_metrics.c, name) + amount for name, amount in added.items()},
            )
        )


def read_metrics(conn: Connection) -> list[RowMapping]:
    """Every (event_type, consumer) counter row."""
    stmt = sa.select(event_metrics).order_by(event_metrics.c.consumer, event_metrics.c.event_type)
    return list(conn.execute(stmt).mappings())
