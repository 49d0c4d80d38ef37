"""Operations on the artifact manifest: every artifact, and every copy of it.

Only the current lease holder's output is used. A job's worker records its output before
it completes the job, so a deposed holder (partitioned, its lease expired, the job re-run
elsewhere) may record a late output after the job was accepted from another attempt. An
artifact is the *accepted* output of its job when the job completed naming it in its
result (`result.artifact_sha256`); an artifact with no producer job (a merged shard), or
whose producer job is gone (retention deleted it, after its late outputs), counts too.
Training windows take accepted game batches only (`window_batches`); the others are
`late_outputs`, which garbage collection deletes.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from zeroloop.store.queries import dialect_insert
from zeroloop.store.schema import artifact_copies, artifacts, jobs

FINISHED = ("completed", "dead", "cancelled")


def _insert_ignore(conn: Connection, table: sa.Table, values: dict[str, Any], keys: list[str]) -> bool:
    statement = dialect_insert(conn, table).values(**values).on_conflict_do_nothing(index_elements=keys)
    return bool(conn.execute(statement).rowcount)


def record_artifact(conn: Connection, row: dict[str, Any]) -> bool:
    """Add an artifact to the manifest; False (and no change) when its sha256 is already there."""
    return _insert_ignore(conn, artifacts, row, ["sha256"])


def record_copy(conn: Connection, *, sha256: str, location: str, node: str | None, now: float) -> None:
    """Record a verified copy at `location`, or mark an existing one present again."""
    values = {"sha256": sha256, "location": location, "node": node, "status": "present", "created_at": now}
    if not _insert_ignore(conn, artifact_copies, {**values, "verified_at": now}, ["sha256", "location"]):
        conn.execute(
            sa.update(artifact_copies)
            .where(artifact_copies.c.sha256 == sha256, artifact_copies.c.location == location)
            .values(status="present", verified_at=now)
        )


def set_copy_status(conn: Connection, *, sha256: str, location: str, status: str, now: float) -> None:
    """Change the status of one copy: present, quarantined or deleted."""
    conn.execute(
        sa.update(artifact_copies)
        .where(artifact_copies.c.sha256 == sha256, artifact_copies.c.location == location)
        .values(status=status, verified_at=now)
    )


def get_artifact(conn: Connection, sha256: str) -> RowMapping | None:
    """One manifest row, or None."""
    return conn.execute(sa.select(artifacts).where(artifacts.c.sha256 == sha256)).mappings().first()


def copies_of(conn: Connection, sha256: str, status: str | None = "present") -> list[RowMapping]:
    """The copies of an artifact (only those with `status`, unless None), oldest first."""
    query = sa.select(artifact_copies).where(artifact_copies.c.sha256 == sha256)
    if status is not None:
        query = query.where(artifact_copies.c.status == status)
    return list(conn.execute(query.order_by(artifact_copies.c.created_at)).mappings())


def list_artifacts(
    conn: Connection, *, config_key: str | None = None, kind: str | None = None, limit: int = 1000
) -> list[RowMapping]:
    """Manifest rows, newest first, optionally of one config key and kind."""
    query = sa.select(artifacts)
    if config_key is not None:
        query = query.where(artifacts.c.config_key == config_key)
    if kind is not None:
        query = query.where(artifacts.c.kind == kind)
    return list(conn.execute(query.order_by(artifacts.c.created_at.desc()).limit(limit)).mappings())


def sole_copies_on_node(conn: Connection, node: str) -> list[str]:
    """Artifacts whose only present copy is on `node`: data a node must not be terminated with."""
    present = sa.select(artifact_copies.c.sha256).where(artifact_copies.c.status == "present")
    elsewhere = present.where(sa.or_(artifact_copies.c.node.is_(None), artifact_copies.c.node != node))
    query = present.where(artifact_copies.c.node == node, artifact_copies.c.sha256.not_in(elsewhere)).distinct()
    return [str(sha) for sha in conn.execute(query).scalars()]


def _result_sha256(table: Any = jobs) -> Any:
    """The artifact a job's accepted result names (None for a job that completed naming none)."""
    return table.c.result["artifact_sha256"].as_string()


def accepted_output() -> sa.ColumnElement[bool]:
    """True for an artifact that is the accepted output of its producer job (see the module docstring)."""
    job = jobs.alias("producer")  # its own name: the subqueries correlate with `artifacts` only
    producer = job.c.id == artifacts.c.producer_job_id
    named = sa.or_(_result_sha256(job).is_(None), _result_sha256(job) == artifacts.c.sha256)
    return sa.or_(
        artifacts.c.producer_job_id.is_(None),
        ~sa.exists().where(producer),
        sa.exists().where(producer, job.c.status == "completed", named),
    )


def window_batches(conn: Connection, config_key: str, *, limit: int = 1000) -> list[RowMapping]:
    """The game batches of `config_key` a training window may take, newest first: accepted outputs only."""
    query = (
        sa.select(artifacts)
        .where(artifacts.c.config_key == config_key, artifacts.c.kind == "game_batch", accepted_output())
        .order_by(artifacts.c.created_at.desc())
        .limit(limit)
    )
    return list(conn.execute(query).mappings())


def late_outputs(conn: Connection) -> list[RowMapping]:
    """Artifacts whose producer job finished without accepting them: a deposed holder's late output, oldest first.

    Each row carries the job's `accepted_sha256` (None when the job did not complete).
    """
    query = (
        sa.select(artifacts, sa.case((jobs.c.status == "completed", _result_sha256())).label("accepted_sha256"))
        .join(jobs, jobs.c.id == artifacts.c.producer_job_id)
        .where(jobs.c.status.in_(FINISHED), sa.not_(accepted_output()))
        .order_by(artifacts.c.created_at, artifacts.c.sha256)
    )
    return list(conn.execute(query).mappings())
