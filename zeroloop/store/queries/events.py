"""Operations on the durable event log.

A *position* in the log is the pair `(txid, id)`. On SQLite `txid` is always 0 and the
position is just the id. On PostgreSQL readers only ever see events below the *horizon*
(the oldest transaction id still running, `pg_snapshot_xmin`): see `read_after` for why
that, with positions ordered by `(txid, id)`, never skips an event.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from zeroloop.store.schema import events
from zeroloop.store.signal import mark_appended

Position = tuple[int, int]
NOTIFY_CHANNEL = "zeroloop_events"

_COLUMNS = (
    "type",
    "payload",
    "source",
    "node",
    "created_at",
    "config_key",
    "trace_id",
    "correlation_id",
    "causation_id",
    "dedup_key",
)
# Precompiled per backend: publishing is the hot path and Core compilation would cost
# more than the round trip. The PostgreSQL form wakes listeners in the same statement;
# the server folds repeated identical notifications of one transaction into one, and
# sends nothing if the transaction rolls back.
_INSERT_PG = (
    "WITH ins AS (INSERT INTO events ({cols}, txid) VALUES ({vals}, pg_current_xact_id()::text::bigint) "
    "ON CONFLICT (dedup_key) DO NOTHING RETURNING id) "
    f"SELECT ins.id FROM ins, pg_notify('{NOTIFY_CHANNEL}', '') AS n"
).format(
    cols=", ".join(_COLUMNS),
    vals=", ".join(f"%({c})s::jsonb" if c == "payload" else f"%({c})s" for c in _COLUMNS),
)
_INSERT_SQLITE = "INSERT INTO events ({cols}) VALUES ({vals}) ON CONFLICT (dedup_key) DO NOTHING RETURNING id".format(
    cols=", ".join(_COLUMNS), vals=", ".join(f":{c}" for c in _COLUMNS)
)


def _params(row: dict[str, Any]) -> dict[str, Any]:
    params = {column: row.get(column) for column in _COLUMNS}
    params["payload"] = json.dumps(row["payload"], separators=(",", ":"))
    return params


def insert_event(conn: Connection, row: dict[str, Any]) -> tuple[int, bool]:
    """Append one event; return (id, inserted). A repeated dedup key returns the first id and False."""
    return insert_events(conn, [row])[0]


def insert_events(conn: Connection, rows: Sequence[dict[str, Any]]) -> list[tuple[int, bool]]:
    """Append events in order; return (id, inserted) for each, as insert_event does.

    Goes to the driver's cursor directly: SQLAlchemy's per-statement overhead is larger
    than a local round trip. On PostgreSQL the rows are pipelined in one round trip.
    """
    all_params = [_params(row) for row in rows]
    cursor: Any = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if conn.dialect.name == "postgresql" and len(all_params) == 1:
            cursor.execute(_INSERT_PG, all_params[0])  # one row: a plain round trip beats pipeline mode
            found = cursor.fetchone()
            ids: list[int | None] = [int(found[0]) if found else None]
        elif conn.dialect.name == "postgresql":
            ids = []
            cursor.executemany(_INSERT_PG, all_params, returning=True)
            while True:
                found = cursor.fetchone()
                ids.append(int(found[0]) if found else None)
                if not cursor.nextset():
                    break
        else:
            ids = []
            for params in all_params:
                cursor.execute(_INSERT_SQLITE, params)
                found = cursor.fetchone()
                ids.append(int(found[0]) if found else None)
            mark_appended(conn)  # SQLite's NOTIFY: the commit rings the event signal (zeroloop.store.signal)
    finally:
        cursor.close()
    result: list[tuple[int, bool]] = []
    for event_id, params in zip(ids, all_params, strict=True):
        if event_id is not None:
            result.append((event_id, True))
            continue
        existing = conn.execute(sa.select(events.c.id).where(events.c.dedup_key == params["dedup_key"])).scalar_one()
        result.append((int(existing), False))
    return result


def horizon(conn: Connection) -> int | None:
    """PostgreSQL: the oldest transaction id still running (every txid below it has finished); SQLite: None."""
    if conn.dialect.name != "postgresql":
        return None
    return int(conn.exec_driver_sql("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint").scalar_one())


def _txid(conn: Connection) -> Any:
    # SQLite leaves txid NULL and orders by id alone; naming the bare column on PostgreSQL
    # keeps the (txid, id) index usable for row comparisons and ordering.
    return events.c.txid if conn.dialect.name == "postgresql" else sa.literal(0)


def _order(conn: Connection) -> list[Any]:
    return [events.c.txid, events.c.id] if conn.dialect.name == "postgresql" else [events.c.id]


def _compare(conn: Connection, position: Position, op: str) -> Any:
    if conn.dialect.name != "postgresql":
        return events.c.id.op(op)(position[1])
    return sa.tuple_(events.c.txid, events.c.id).op(op)(sa.tuple_(sa.literal(position[0]), sa.literal(position[1])))


def _visible(conn: Connection, after: Position, limit_horizon: int | None) -> list[Any]:
    clauses: list[Any] = [_compare(conn, after, ">")]
    if limit_horizon is not None:
        clauses.append(events.c.txid < limit_horizon)
    return clauses


def _filters(types: Sequence[str], config_keys: Sequence[str] | None) -> list[Any]:
    clauses: list[Any] = []
    if types:
        clauses.append(events.c.type.in_(list(types)))
    if config_keys is not None:
        clauses.append(events.c.config_key.in_(list(config_keys)))
    return clauses


def read_after(
    conn: Connection,
    after: Position,
    *,
    limit_horizon: int | None,
    types: Sequence[str] = (),
    config_keys: Sequence[str] | None = None,
    limit: int = 500,
) -> list[RowMapping]:
    """The events after position `after` (below `limit_horizon` on PostgreSQL), in position order.

    Why nothing is ever skipped on PostgreSQL: ids come from a sequence at insert, not at
    commit, so `id > cursor` alone can pass over an event whose transaction commits
    later with a smaller id. Take H = `horizon()`. Every transaction with txid < H has
    finished, so the set of events with txid < H is final: no event with txid < H can
    appear later. Every transaction still running, or started later, has txid >= H (new
    txids are never below the oldest running one), so it lands above every position
    read so far. Reading in (txid, id) order below H and moving the cursor forward in
    that order therefore never passes an event that may still appear. The id alone is
    not enough even under the horizon: a transaction may take its txid (first write)
    before another, but insert its event after it, so (txid, id) order differs from id
    order; the cursor is the pair. tests/events/test_ordering.py shows both cases.
    """
    clauses = _visible(conn, after, limit_horizon) + _filters(types, config_keys)
    stmt = sa.select(events).where(*clauses).order_by(*_order(conn)).limit(limit)
    return list(conn.execute(stmt).mappings())


def high_water(conn: Connection, *, limit_horizon: int | None) -> Position:
    """The last position readable now (below the horizon); (0, 0) for an empty log."""
    stmt = sa.select(_txid(conn), events.c.id)
    if limit_horizon is not None:
        stmt = stmt.where(events.c.txid < limit_horizon)
    row = conn.execute(stmt.order_by(*(column.desc() for column in _order(conn))).limit(1)).first()
    return (int(row[0]), int(row[1])) if row else (0, 0)


_MARKS_PG = (
    "WITH h AS (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS x), "
    "below AS (SELECT txid, id FROM events, h WHERE txid < h.x ORDER BY txid DESC, id DESC LIMIT 1), "
    "newest AS (SELECT txid, id FROM events ORDER BY txid DESC, id DESC LIMIT 1) "
    "SELECT h.x, below.txid, below.id, newest.txid, newest.id FROM h LEFT JOIN below ON true LEFT JOIN newest ON true"
)


def marks(conn: Connection) -> tuple[int | None, Position, Position]:
    """(horizon, high_water below it, newest committed position) in one round trip.

    A newest position above the high water means events of finished transactions are
    held back behind an older transaction that is still open (PostgreSQL only).
    """
    if conn.dialect.name != "postgresql":
        high = high_water(conn, limit_horizon=None)
        return None, high, high
    x, below_txid, below_id, new_txid, new_id = conn.exec_driver_sql(_MARKS_PG).one()
    below = (int(below_txid), int(below_id)) if below_id is not None else (0, 0)
    newest = (int(new_txid), int(new_id)) if new_id is not None else (0, 0)
    return int(x), below, newest


def position_before(conn: Connection, event_id: int) -> Position:
    """The position just before event `event_id` (or before where it would be), for replay."""
    txid = conn.execute(
        sa.select(_txid(conn)).where(events.c.id >= event_id).order_by(events.c.id).limit(1)
    ).scalar_one_or_none()
    if txid is None:
        return high_water(conn, limit_horizon=None)
    # Positions are (txid, id); txids of one transaction share a value, so one id back suffices.
    return (int(txid), event_id - 1)


def get_event(conn: Connection, event_id: int) -> RowMapping | None:
    """One event by id, or None."""
    return conn.execute(sa.select(events).where(events.c.id == event_id)).mappings().first()


def latest(
    conn: Connection, *, types: Sequence[str] = (), config_keys: Sequence[str] | None = None, limit: int = 20
) -> list[RowMapping]:
    """The newest `limit` matching events, oldest first."""
    stmt = sa.select(events).where(*_filters(types, config_keys)).order_by(events.c.id.desc()).limit(limit)
    return list(reversed(list(conn.execute(stmt).mappings())))


def count_after(
    conn: Connection, after: Position, *, types: Sequence[str] = (), config_keys: Sequence[str] | None = None
) -> int:
    """How many matching events lie after position `after` (a consumer's lag, in events)."""
    stmt = (
        sa.select(sa.func.count())
        .select_from(events)
        .where(*_visible(conn, after, None), *_filters(types, config_keys))
    )
    return int(conn.execute(stmt).scalar_one())


def count_by_type(conn: Connection) -> dict[str, int]:
    """Events in the log per type."""
    rows = conn.execute(sa.select(events.c.type, sa.func.count()).group_by(events.c.type))
    return {str(event_type): int(count) for event_type, count in rows}


def prune(
    conn: Connection, *, older_than: float, keep_count: int, processed_up_to: Position | None, keep_ids: Sequence[int]
) -> int:
    """Delete events older than `older_than` (epoch s) or beyond the newest `keep_count`; return how many.

    Never deletes an event after `processed_up_to` (the slowest consumer's cursor; None:
    no bound), one in `keep_ids` (pending dead letters), or the newest event, whose id
    SQLite would otherwise hand out again.
    """
    newest = conn.execute(sa.select(sa.func.max(events.c.id))).scalar_one_or_none()
    if newest is None:
        return 0
    beyond_count = conn.execute(
        sa.select(events.c.id).order_by(events.c.id.desc()).limit(1).offset(keep_count)
    ).scalar_one_or_none()
    expired: Any = events.c.created_at < older_than
    if beyond_count is not None:
        expired = sa.or_(expired, events.c.id <= beyond_count)
    clauses: list[Any] = [expired, events.c.id != newest]
    if processed_up_to is not None:
        clauses.append(_compare(conn, processed_up_to, "<="))
    if keep_ids:
        clauses.append(events.c.id.not_in(list(keep_ids)))
    return int(conn.execute(sa.delete(events).where(*clauses)).rowcount)
