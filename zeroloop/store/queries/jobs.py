"""Operations on the work queue: jobs, their dependencies, and the last backpressure level.

The claim is one statement on both backends: `UPDATE jobs ... WHERE id = (SELECT ...
LIMIT 1) RETURNING ...`, with `FOR UPDATE SKIP LOCKED` on PostgreSQL so concurrent
claimers pass over each other's rows instead of queueing on them; SQLite runs it inside
the store's `BEGIN IMMEDIATE`, which already serialises writers. A batched claim is one
statement too (`WITH picked AS (SELECT ... LIMIT :limit FOR UPDATE SKIP LOCKED) UPDATE
... WHERE id IN (...)`). Times are epoch seconds.

The lease statements (claim, extend, finish, requeue) are the queue's hot path: they are
plain SQL written once and run on the driver's cursor, because SQLAlchemy's work per
statement cost more than the statement itself. Jobs are returned as mappings of column
to value, JSON columns decoded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from zeroloop.store.queries import dialect_insert
from zeroloop.store.schema import backpressure, job_dependencies, jobs

# pg_advisory_xact_lock key taken by claims that may pick a concurrency-limited type, so
# two of them cannot both count "none running" under READ COMMITTED ("zlqc" in ASCII).
CONCURRENCY_LOCK_KEY = 0x7A6C7163

# A jobs row: column name to value (SQLAlchemy's RowMapping, or a dict on the hot path).
JobRow = Mapping[Any, Any]

_NAMES = tuple(column.name for column in jobs.columns)
_COLUMNS = ", ".join(_NAMES)
_JSON_COLUMNS = frozenset({"payload", "need_labels", "result"})


@dataclass(frozen=True)
class _Sql:
    """One hot-path statement in each driver's parameter style: `:name` (sqlite3) and `%(name)s` (psycopg).

    Written with `:name` placeholders; `{json:name}` marks a parameter passed as JSON text.
    """

    sqlite: str
    postgresql: str

    @classmethod
    def of(cls, sql: str) -> _Sql:
        pg = re.sub(r"\{json:(\w+)\}", r"CAST(:\1 AS jsonb)", sql)
        return cls(
            sqlite=re.sub(r"\{json:(\w+)\}", r":\1", sql),
            postgresql=re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", pg),
        )


def _fetch_one(conn: Connection, sql: _Sql, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """Run a hot-path statement on the driver's cursor; its first row as a tuple, or None."""
    cursor: Any = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql.postgresql if conn.dialect.name == "postgresql" else sql.sqlite, params)
        found: tuple[Any, ...] | None = cursor.fetchone()
        return found
    finally:
        cursor.close()


def _fetch_job(conn: Connection, sql: _Sql, params: Mapping[str, Any]) -> dict[str, Any] | None:
    """Run a statement returning at most one whole jobs row; the row as a dict, or None."""
    values = _fetch_one(conn, sql, params)
    return None if values is None else _job_row(conn, values)


def _fetch_jobs(conn: Connection, sql: _Sql, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Run a statement returning whole jobs rows; each as a dict."""
    cursor: Any = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql.postgresql if conn.dialect.name == "postgresql" else sql.sqlite, params)
        found = cursor.fetchall()
    finally:
        cursor.close()
    return [_job_row(conn, values) for values in found]


def _job_row(conn: Connection, values: Sequence[Any]) -> dict[str, Any]:
    row = dict(zip(_NAMES, values, strict=True))
    if conn.dialect.name != "postgresql":  # psycopg decodes jsonb itself; sqlite3 hands back the JSON text
        for name in _JSON_COLUMNS:
            # SQLite's numeric affinity hands a bare JSON number (a result of 0) back as a number already.
            if isinstance(row[name], str):
                row[name] = json.loads(row[name])
    return row


def _as_json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def mark_dependents(conn: Connection, job_ids: Sequence[int]) -> dict[int, str]:
    """Flag `job_ids` as having dependents (locking them); return the status of each that exists."""
    if not job_ids:
        return {}
    stmt = (
        sa.update(jobs)
        .where(jobs.c.id.in_(list(job_ids)))
        .values(has_dependents=True)
        .returning(jobs.c.id, jobs.c.status)
    )
    return {int(job_id): str(status) for job_id, status in conn.execute(stmt)}


def release_dependents(conn: Connection, job_id: int) -> int:
    """Count `job_id` as completed for every job waiting on it; return how many were waiting."""
    waiting = sa.select(job_dependencies.c.job_id).where(job_dependencies.c.depends_on == job_id)
    stmt = sa.update(jobs).where(jobs.c.id.in_(waiting)).values(waiting_on=jobs.c.waiting_on - 1)
    return int(conn.execute(stmt).rowcount)


def insert_job(conn: Connection, row: Mapping[str, Any], depends_on: Sequence[int] = ()) -> tuple[JobRow, bool]:
    """Insert one job and its dependencies; return (job row, inserted). A repeated idempotency key returns the first."""
    if row.get("idempotency_key") is None:
        inserted = conn.execute(sa.insert(jobs).values(**row).returning(*jobs.columns)).mappings().one()
    else:
        stmt = dialect_insert(conn, jobs)
        maybe = (
            conn.execute(
                stmt.values(**row).on_conflict_do_nothing(index_elements=["idempotency_key"]).returning(*jobs.columns)
            )
            .mappings()
            .one_or_none()
        )
        if maybe is None:
            existing = conn.execute(sa.select(jobs).where(jobs.c.idempotency_key == row["idempotency_key"]))
            return existing.mappings().one(), False
        inserted = maybe
    if depends_on:
        conn.execute(sa.insert(job_dependencies), [{"job_id": inserted["id"], "depends_on": dep} for dep in depends_on])
    return inserted, True


def insert_jobs(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> list[JobRow]:
    """Insert jobs with neither dependencies nor idempotency keys in batched statements; their rows, in order."""
    if not rows:
        return []
    stmt = sa.insert(jobs).returning(*jobs.columns, sort_by_parameter_order=True)
    return list(conn.execute(stmt, [dict(row) for row in rows]).mappings())


def get_job(conn: Connection, job_id: int, *, lock: bool = False) -> JobRow | None:
    """One job by id, or None; `lock` takes its row lock (PostgreSQL; SQLite's write lock already covers it)."""
    stmt = sa.select(jobs).where(jobs.c.id == job_id)
    if lock and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return conn.execute(stmt).mappings().one_or_none()


def job_by_idempotency_key(conn: Connection, key: str) -> JobRow | None:
    """The job enqueued with idempotency key `key`, or None."""
    return conn.execute(sa.select(jobs).where(jobs.c.idempotency_key == key)).mappings().one_or_none()


def dependencies_of(conn: Connection, job_id: int) -> list[int]:
    """The ids of the jobs that `job_id` waits for."""
    stmt = sa.select(job_dependencies.c.depends_on).where(job_dependencies.c.job_id == job_id)
    return sorted(int(dep) for dep in conn.execute(stmt.order_by(job_dependencies.c.depends_on)).scalars())


@lru_cache(maxsize=128)
def _claim_statement(types: int, limits: tuple[tuple[str, int], ...], batch: bool, registered: bool) -> _Sql:
    where = [
        "j.status = 'queued'",
        "j.run_after <= :now",
        "(j.target_node IS NULL OR j.target_node = :node)",
        # A node claims only while ACTIVE: draining stops claims at once. `registered` also refuses a
        # node with no row at all (a worker behind the server must register before it claims).
        "EXISTS (SELECT 1 FROM nodes AS n WHERE n.id = :node AND n.status = 'active')"
        if registered
        else "NOT EXISTS (SELECT 1 FROM nodes AS n WHERE n.id = :node AND n.status <> 'active')",
        # A job waits until every job it depends on has completed.
        "j.waiting_on = 0",
        "j.need_gpus <= :gpus",
        "j.need_memory_bytes <= :memory_bytes",
    ]
    # One type is an equality, so the claim index yields the claim order directly.
    if types == 1:
        where.append("j.type = :type")
    elif types > 1:
        where.append("{types}")
    where.append("{labels}")
    # The node's circuit breaker (owned by the cluster part): an open one refuses work until
    # its recovery time has passed, after which it counts as half-open and may take a trial job.
    where.append(
        "NOT EXISTS (SELECT 1 FROM circuit_breakers AS cb WHERE cb.key = :breaker_key AND cb.state = 'open'"
        " AND COALESCE(cb.opened_at, :now) + :recovery_s > :now)"
    )
    cases = " ".join(f"WHEN '{name}' THEN {limit}" for name, limit in limits)
    names = ", ".join(f"'{name}'" for name, _ in limits)
    if limits:
        where.append(
            f"(j.type NOT IN ({names}) OR (SELECT count(*) FROM jobs AS r WHERE r.status = 'running'"
            f" AND r.type = j.type AND r.config_key = j.config_key) < CASE j.type {cases} END)"
        )
    order = "ORDER BY j.priority DESC, j.id"
    update = (
        "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_node = :node,"
        " lease_token = lease_token + 1, lease_expires_at = :now + CASE WHEN timeout_s < :lease_s"
        " THEN timeout_s ELSE :lease_s END, claimed_at = :now, updated_at = :now"
    )
    if not batch:
        pick = f"SELECT j.id FROM jobs AS j WHERE {' AND '.join(where)} {order} LIMIT 1"
        template = _Sql.of(f"{update} WHERE id = ({pick}{{lock}}) RETURNING {_COLUMNS}")
    else:
        # Up to :limit jobs in one statement. The rows are picked (and, on PostgreSQL, locked, passing over
        # rows other claimers hold) first; then no more jobs of a limited type per config key are taken
        # than its limit leaves, counting the ones picked here by their rank within their config key.
        pick = f"SELECT j.id, j.type, j.config_key, j.priority FROM jobs AS j WHERE {' AND '.join(where)} {order}"
        chosen = "SELECT id FROM picked"
        if limits:
            chosen = (
                "SELECT id FROM (SELECT p.id, p.type, p.config_key, ROW_NUMBER() OVER (PARTITION BY p.type,"
                " p.config_key ORDER BY p.priority DESC, p.id) AS rank FROM picked AS p) AS ranked"
                f" WHERE ranked.type NOT IN ({names}) OR ranked.rank + (SELECT count(*) FROM jobs AS r"
                " WHERE r.status = 'running' AND r.type = ranked.type AND r.config_key = ranked.config_key)"
                f" <= CASE ranked.type {cases} END"
            )
        template = _Sql.of(
            f"WITH picked AS ({pick} LIMIT :limit{{lock}}) {update} WHERE id IN ({chosen}) RETURNING {_COLUMNS}"
        )
    sqlite_labels = (
        "(j.need_labels IS NULL OR NOT EXISTS (SELECT 1 FROM json_each(j.need_labels) AS l"
        " WHERE l.value NOT IN (SELECT value FROM json_each(:labels))))"
    )
    return _Sql(
        sqlite=template.sqlite.format(
            types="j.type IN (SELECT value FROM json_each(:types))", labels=sqlite_labels, lock=""
        ),
        postgresql=template.postgresql.format(
            types="j.type = ANY(%(types)s)",
            labels="(j.need_labels IS NULL OR j.need_labels <@ CAST(%(labels)s AS jsonb))",
            lock=" FOR UPDATE SKIP LOCKED",
        ),
    )


def claim_job(
    conn: Connection,
    *,
    node: str,
    now: float,
    lease_s: float,
    types: Sequence[str] | None,
    gpus: int,
    memory_bytes: int,
    labels: Sequence[str],
    limits: Mapping[str, int],
    recovery_s: float,
    registered: bool = False,
) -> JobRow | None:
    """Lease the next claimable job to `node` (highest priority, then oldest); None when there is none.

    `limits` maps job type to the most jobs of that type running at once per config key;
    `recovery_s` is how long an open circuit breaker `node:<node>` refuses claims;
    `registered`: only a node registered and active may claim (else: any node not known to be inactive).
    """
    rows = _claim(conn, 1, node, now, lease_s, types, gpus, memory_bytes, labels, limits, recovery_s, registered)
    return rows[0] if rows else None


def claim_jobs(
    conn: Connection,
    *,
    limit: int,
    node: str,
    now: float,
    lease_s: float,
    types: Sequence[str] | None,
    gpus: int,
    memory_bytes: int,
    labels: Sequence[str],
    limits: Mapping[str, int],
    recovery_s: float,
    registered: bool = False,
) -> list[JobRow]:
    """Lease up to `limit` claimable jobs to `node` in one statement, in claim order (as `claim_job`, batched).

    Each job needs at most `gpus` and `memory_bytes` by itself: the caller offers what it
    can give every job it asks for. Fewer than `limit` may come back while more are queued
    when a concurrency-limited type fills its config key's limit within the batch.
    """
    return _claim(conn, limit, node, now, lease_s, types, gpus, memory_bytes, labels, limits, recovery_s, registered)


def _claim(
    conn: Connection,
    limit: int,
    node: str,
    now: float,
    lease_s: float,
    types: Sequence[str] | None,
    gpus: int,
    memory_bytes: int,
    labels: Sequence[str],
    limits: Mapping[str, int],
    recovery_s: float,
    registered: bool,
) -> list[JobRow]:
    pg = conn.dialect.name == "postgresql"
    relevant = tuple(sorted((name, int(n)) for name, n in limits.items() if types is None or name in types))
    if pg and relevant:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": CONCURRENCY_LOCK_KEY})
    params: dict[str, Any] = {
        "node": node,
        "now": now,
        "lease_s": lease_s,
        "gpus": gpus,
        "memory_bytes": memory_bytes,
        "labels": json.dumps(sorted(labels)),
        "breaker_key": f"node:{node}",
        "recovery_s": recovery_s,
        "limit": limit,
    }
    count = 0 if types is None else len(types)
    if count == 1:
        assert types is not None
        params["type"] = types[0]
    elif count > 1:
        assert types is not None
        params["types"] = list(types) if pg else json.dumps(list(types))
    statement = _claim_statement(count, relevant, limit > 1, registered)
    if limit == 1:
        row = _fetch_job(conn, statement, params)
        return [] if row is None else [row]
    rows = _fetch_jobs(conn, statement, params)
    return sorted(rows, key=lambda row: (-row["priority"], row["id"]))


_HELD = "WHERE id = :id AND lease_token = :token AND status = 'running'"
# A lease that ran out is over even before the reaper sees it: its holder may no longer
# extend it or report a result (someone else may be about to run the job again).
_LIVE = f"{_HELD} AND lease_expires_at >= :now"
_EXTEND = _Sql.of(
    "UPDATE jobs SET lease_expires_at = CASE WHEN claimed_at + timeout_s < :now + :lease_s"
    f" THEN claimed_at + timeout_s ELSE :now + :lease_s END, updated_at = :now {_LIVE} RETURNING lease_expires_at"
)
_FINISH_SET = (
    "UPDATE jobs SET status = :status, result = {json:result}, error = :error, lease_expires_at = NULL,"
    " finished_at = :now, updated_at = :now"
)
_FINISH = _Sql.of(f"{_FINISH_SET} {_HELD} RETURNING {_COLUMNS}")
_FINISH_LIVE = _Sql.of(f"{_FINISH_SET} {_LIVE} RETURNING {_COLUMNS}")
_REQUEUE = _Sql.of(
    "UPDATE jobs SET status = 'queued', run_after = :run_after, error = :error, lease_expires_at = NULL,"
    f" updated_at = :now {_HELD} RETURNING {_COLUMNS}"
)


def extend_lease(conn: Connection, job_id: int, token: int, *, now: float, lease_s: float) -> float | None:
    """Extend a running job's lease if `token` is current and unexpired; return the new expiry, or None when refused.

    The lease never reaches past claimed_at + timeout_s, so a job that overruns its time
    limit stops being extended and expires.
    """
    found = _fetch_one(conn, _EXTEND, {"id": job_id, "token": token, "now": now, "lease_s": lease_s})
    return None if found is None else float(found[0])


def finish_job(
    conn: Connection,
    job_id: int,
    token: int,
    *,
    status: str,
    now: float,
    result: Any = None,
    error: str | None = None,
    live: bool = False,
) -> dict[str, Any] | None:
    """Move a running job held under `token` to `status` (completed or dead); None when the token is stale.

    `live` also requires the lease not to have expired before `now` (a result must come from a live lease).
    """
    params = {"id": job_id, "token": token, "status": status, "now": now, "result": _as_json(result), "error": error}
    return _fetch_job(conn, _FINISH_LIVE if live else _FINISH, params)


def requeue_job(
    conn: Connection, job_id: int, token: int, *, now: float, run_after: float, error: str | None
) -> dict[str, Any] | None:
    """Put a running job held under `token` back in the queue from `run_after` on; None when the token is stale."""
    params = {"id": job_id, "token": token, "now": now, "run_after": run_after, "error": error}
    return _fetch_job(conn, _REQUEUE, params)


_RELEASE = _Sql.of(
    "UPDATE jobs SET status = 'queued', attempts = attempts - 1, run_after = :now, error = :error,"
    f" lease_expires_at = NULL, updated_at = :now {_HELD} RETURNING {_COLUMNS}"
)


def release_job(conn: Connection, job_id: int, token: int, *, now: float, reason: str) -> dict[str, Any] | None:
    """Give a running job held under `token` back to the queue at once, its attempt uncounted; None when stale."""
    return _fetch_job(conn, _RELEASE, {"id": job_id, "token": token, "now": now, "error": reason})


def queued_dependents(conn: Connection, job_id: int) -> list[JobRow]:
    """The queued jobs that wait for `job_id`, locked (PostgreSQL), lowest id first."""
    waiting = sa.select(job_dependencies.c.job_id).where(job_dependencies.c.depends_on == job_id)
    stmt = sa.select(jobs).where(jobs.c.id.in_(waiting), jobs.c.status == "queued").order_by(jobs.c.id)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return list(conn.execute(stmt).mappings())


def unfinishable_dependencies(conn: Connection, job_id: int) -> list[tuple[int, str]]:
    """(id, status) of each job `job_id` depends on that is dead or cancelled, so it can never complete."""
    stmt = (
        sa.select(jobs.c.id, jobs.c.status)
        .join(job_dependencies, job_dependencies.c.depends_on == jobs.c.id)
        .where(job_dependencies.c.job_id == job_id, jobs.c.status.in_(["dead", "cancelled"]))
        .order_by(jobs.c.id)
    )
    return [(int(dep), str(status)) for dep, status in conn.execute(stmt)]


def set_status(conn: Connection, job_id: int, *, status: str, now: float, **values: Any) -> JobRow:
    """Set a job's status (and any other columns given) unconditionally; the caller checked the transition."""
    stmt = sa.update(jobs).where(jobs.c.id == job_id).values(status=status, updated_at=now, **values)
    return conn.execute(stmt.returning(*jobs.columns)).mappings().one()


def expired_jobs(conn: Connection, *, now: float, limit: int) -> list[JobRow]:
    """Running jobs whose lease ran out before `now`, locked; rows another reaper holds are skipped (PostgreSQL)."""
    stmt = (
        sa.select(jobs)
        .where(jobs.c.status == "running", jobs.c.lease_expires_at < now)
        .order_by(jobs.c.lease_expires_at)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    return list(conn.execute(stmt).mappings())


def node_jobs(conn: Connection, node: str) -> list[JobRow]:
    """The running jobs leased to `node`, locked, soonest expiry first (an order the lease-expiry index gives)."""
    stmt = (
        sa.select(jobs)
        .where(jobs.c.status == "running", jobs.c.lease_node == node)
        .order_by(jobs.c.lease_expires_at, jobs.c.id)
    )
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return list(conn.execute(stmt).mappings())


def list_jobs(
    conn: Connection,
    *,
    statuses: Sequence[str] | None = None,
    job_type: str | None = None,
    config_key: str | None = None,
    limit: int = 100,
) -> list[JobRow]:
    """Jobs matching the filters, newest first, at most `limit`."""
    stmt = sa.select(jobs).order_by(jobs.c.id.desc()).limit(limit)
    if statuses:
        stmt = stmt.where(jobs.c.status.in_(list(statuses)))
    if job_type is not None:
        stmt = stmt.where(jobs.c.type == job_type)
    if config_key is not None:
        stmt = stmt.where(jobs.c.config_key == config_key)
    return list(conn.execute(stmt).mappings())


def job_counts(conn: Connection) -> list[tuple[str, str, int]]:
    """(type, status, count) for every type and status present."""
    stmt = (
        sa.select(jobs.c.type, jobs.c.status, sa.func.count())
        .group_by(jobs.c.type, jobs.c.status)
        .order_by(jobs.c.type, jobs.c.status)
    )
    return [(str(t), str(s), int(n)) for t, s, n in conn.execute(stmt)]


def queued_depth(conn: Connection, job_type: str, *, at_most: int) -> int:
    """How many jobs of `job_type` are queued (claimable now or not yet), counting no further than `at_most`."""
    queued = sa.select(jobs.c.id).where(jobs.c.status == "queued", jobs.c.type == job_type).limit(at_most)
    return int(conn.execute(sa.select(sa.func.count()).select_from(queued.subquery())).scalar_one())


def get_backpressure(conn: Connection, queue_type: str) -> str | None:
    """The last backpressure level recorded for `queue_type`, or None if none was."""
    stmt = sa.select(backpressure.c.level).where(backpressure.c.queue_type == queue_type)
    level = conn.execute(stmt).scalar_one_or_none()
    return None if level is None else str(level)


def lock_backpressure(conn: Connection, queue_type: str, *, initial: str, now: float) -> str:
    """Ensure `queue_type` has a backpressure row (level `initial` if new), lock it, return its level."""
    stmt = dialect_insert(conn, backpressure)
    conn.execute(
        stmt.values(queue_type=queue_type, level=initial, depth=0, updated_at=now).on_conflict_do_nothing(
            index_elements=["queue_type"]
        )
    )
    select = sa.select(backpressure.c.level).where(backpressure.c.queue_type == queue_type)
    if conn.dialect.name == "postgresql":
        select = select.with_for_update()
    return str(conn.execute(select).scalar_one())


def set_backpressure(conn: Connection, queue_type: str, *, level: str, depth: int, now: float) -> None:
    """Record the backpressure level of `queue_type` (its row exists: see lock_backpressure)."""
    stmt = sa.update(backpressure).where(backpressure.c.queue_type == queue_type)
    conn.execute(stmt.values(level=level, depth=depth, updated_at=now))
