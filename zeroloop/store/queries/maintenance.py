"""Operations of backups, retention and garbage collection over the manifest, jobs and models.

Garbage collection deletes rows in an order a crash in between cannot break: an
artifact's file goes first, then its manifest row (its copies go with it, ON DELETE
CASCADE); a row left without its file is what the orphan check repairs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from zeroloop.store.queries.artifacts import accepted_output
from zeroloop.store.schema import (
    artifact_copies,
    artifacts,
    elo_history,
    job_dependencies,
    jobs,
    matches,
    models,
    pipelines,
)

FINISHED_JOB_STATUSES = ("completed", "dead", "cancelled")


def manifest(conn: Connection) -> list[dict[str, Any]]:
    """Every artifact with its copies (location, node, status), oldest first: what a backup records."""
    found: dict[str, dict[str, Any]] = {}
    for row in conn.execute(sa.select(artifacts).order_by(artifacts.c.created_at, artifacts.c.sha256)).mappings():
        found[row["sha256"]] = {
            "sha256": row["sha256"],
            "kind": row["kind"],
            "size_bytes": int(row["size_bytes"]),
            "config_key": row["config_key"],
            "created_at": float(row["created_at"]),
            "copies": [],
        }
    query = sa.select(artifact_copies).order_by(artifact_copies.c.sha256, artifact_copies.c.created_at)
    for copy in conn.execute(query).mappings():
        entry = found.get(copy["sha256"])
        if entry is not None:
            entry["copies"].append({"location": copy["location"], "node": copy["node"], "status": copy["status"]})
    return list(found.values())


def shared_copies(conn: Connection) -> list[RowMapping]:
    """Every copy under the artifact location (relative key, no node) that the manifest holds present."""
    query = sa.select(artifact_copies.c.sha256, artifact_copies.c.location).where(
        artifact_copies.c.node.is_(None), artifact_copies.c.status == "present"
    )
    return list(conn.execute(query).mappings())


def artifacts_of_kind(
    conn: Connection, kind: str, *, created_before: float, accepted_only: bool = False
) -> list[RowMapping]:
    """Artifacts of `kind` created before a time (epoch seconds), oldest first; only accepted outputs if asked
    (see zeroloop.store.queries.artifacts)."""
    query = sa.select(artifacts).where(artifacts.c.kind == kind, artifacts.c.created_at < created_before)
    if accepted_only:
        query = query.where(accepted_output())
    return list(conn.execute(query.order_by(artifacts.c.created_at, artifacts.c.sha256)).mappings())


def count_artifacts(conn: Connection, shas: Iterable[str]) -> int:
    """How many of `shas` the manifest holds."""
    query = sa.select(sa.func.count()).select_from(artifacts).where(artifacts.c.sha256.in_(list(shas)))
    return int(conn.execute(query).scalar_one())


def unfinished_jobs(conn: Connection) -> list[RowMapping]:
    """Every queued or running job's id, type, status and payload: what they name must stay."""
    query = sa.select(jobs.c.id, jobs.c.type, jobs.c.status, jobs.c.payload).where(
        jobs.c.status.in_(("queued", "running"))
    )
    return list(conn.execute(query.order_by(jobs.c.id)).mappings())


def depended_on_by_unfinished(conn: Connection) -> dict[int, list[int]]:
    """Finished or not, every job that a queued or running job depends on, with those dependents' ids."""
    dependent = jobs.alias("dependent")
    query = (
        sa.select(job_dependencies.c.depends_on, job_dependencies.c.job_id)
        .join(dependent, dependent.c.id == job_dependencies.c.job_id)
        .where(dependent.c.status.not_in(FINISHED_JOB_STATUSES))
        .order_by(job_dependencies.c.depends_on, job_dependencies.c.job_id)
    )
    found: dict[int, list[int]] = {}
    for depends_on, job_id in conn.execute(query):
        found.setdefault(int(depends_on), []).append(int(job_id))
    return found


def inputs_of_unfinished_exports(conn: Connection, config_key: str) -> set[str]:
    """The game batches that queued or running export jobs of `config_key` name as inputs."""
    query = sa.select(jobs.c.payload).where(
        jobs.c.type == "export", jobs.c.config_key == config_key, jobs.c.status.in_(("queued", "running"))
    )
    return {str(sha) for payload in conn.execute(query).scalars() for sha in (payload or {}).get("inputs", [])}


def delete_artifact(conn: Connection, sha256: str) -> bool:
    """Remove an artifact and (by cascade) its copies from the manifest; False when it was not there."""
    conn.execute(sa.delete(artifact_copies).where(artifact_copies.c.sha256 == sha256))
    return bool(conn.execute(sa.delete(artifacts).where(artifacts.c.sha256 == sha256)).rowcount)


def delete_copy(conn: Connection, sha256: str, location: str) -> None:
    """Remove one copy row; the artifact row stays (the orphan repair removes an artifact left with none)."""
    conn.execute(
        sa.delete(artifact_copies).where(artifact_copies.c.sha256 == sha256, artifact_copies.c.location == location)
    )


def drop_if_unreferenced(conn: Connection, sha256: str) -> bool:
    """Remove an artifact left without any copy row, unless a model names it (as its file or window)."""
    if conn.execute(sa.select(artifact_copies.c.sha256).where(artifact_copies.c.sha256 == sha256).limit(1)).first():
        return False
    named = sa.or_(models.c.artifact_sha256 == sha256, models.c.window_sha256 == sha256)
    if conn.execute(sa.select(models.c.id).where(named).limit(1)).first():
        return False
    return bool(conn.execute(sa.delete(artifacts).where(artifacts.c.sha256 == sha256)).rowcount)


def pipeline_keys(conn: Connection) -> list[str]:
    """The config key of every pipeline."""
    return [
        str(key) for key in conn.execute(sa.select(pipelines.c.config_key).order_by(pipelines.c.config_key)).scalars()
    ]


def finished_jobs_before(conn: Connection, before: float, *, after: int = 0, limit: int) -> list[int]:
    """Ids above `after` of completed, dead or cancelled jobs that finished before `before` (epoch seconds), in order.

    A job another unfinished job depends on is kept, so a dependency is never cut away.
    """
    dependent = jobs.alias("dependent")
    waiting = (
        sa.select(job_dependencies.c.depends_on)
        .join(dependent, dependent.c.id == job_dependencies.c.job_id)
        .where(dependent.c.status.not_in(FINISHED_JOB_STATUSES))
    )
    query = (
        sa.select(jobs.c.id)
        .where(
            jobs.c.id > after,
            jobs.c.status.in_(FINISHED_JOB_STATUSES),
            sa.func.coalesce(jobs.c.finished_at, jobs.c.updated_at) < before,
            jobs.c.id.not_in(waiting),
        )
        .order_by(jobs.c.id)
        .limit(limit)
    )
    return [int(job_id) for job_id in conn.execute(query).scalars()]


def delete_jobs(conn: Connection, job_ids: Iterable[int]) -> int:
    """Delete jobs and their dependency edges; return how many jobs went."""
    ids = list(job_ids)
    if not ids:
        return 0
    conn.execute(
        sa.delete(job_dependencies).where(
            sa.or_(job_dependencies.c.job_id.in_(ids), job_dependencies.c.depends_on.in_(ids))
        )
    )
    return int(conn.execute(sa.delete(jobs).where(jobs.c.id.in_(ids))).rowcount)


def all_models(conn: Connection) -> list[RowMapping]:
    """Every registered model (id, config key, artifact, parent, window, stage, created_at)."""
    return list(conn.execute(sa.select(models)).mappings())


def delete_model(conn: Connection, model_id: str) -> bool:
    """Remove a model's registry row; False when it was not there."""
    return bool(conn.execute(sa.delete(models).where(models.c.id == model_id)).rowcount)


def matches_of_gone_models(conn: Connection, before: float, *, baselines: Iterable[str]) -> list[int]:
    """Ids of matches recorded before `before` (epoch seconds) that a deleted model played.

    Player a is always a model; player b is a model or a baseline (named in `baselines`).
    """
    registered = sa.select(models.c.id)
    gone_b = sa.and_(matches.c.player_b.not_in(registered), matches.c.player_b.not_in(list(baselines)))
    query = sa.select(matches.c.id).where(
        matches.c.created_at < before, sa.or_(matches.c.player_a.not_in(registered), gone_b)
    )
    return [int(match_id) for match_id in conn.execute(query.order_by(matches.c.id)).scalars()]


def matches_of_models(conn: Connection, model_ids: Iterable[str], *, before: float) -> list[int]:
    """Ids of matches recorded before `before` (epoch seconds) in which any of `model_ids` played."""
    ids = list(model_ids)
    query = sa.select(matches.c.id).where(
        matches.c.created_at < before, sa.or_(matches.c.player_a.in_(ids), matches.c.player_b.in_(ids))
    )
    return [int(match_id) for match_id in conn.execute(query.order_by(matches.c.id)).scalars()]


def delete_matches(conn: Connection, match_ids: Iterable[int]) -> int:
    """Delete matches and the rating history rows they wrote; return how many matches went."""
    ids = list(match_ids)
    if not ids:
        return 0
    conn.execute(sa.delete(elo_history).where(elo_history.c.match_id.in_(ids)))
    return int(conn.execute(sa.delete(matches).where(matches.c.id.in_(ids))).rowcount)


def delete_rating_history_of_gone_models(conn: Connection, before: float) -> int:
    """Delete rating history rows older than `before` (epoch seconds) of models no longer registered."""
    query = sa.delete(elo_history).where(
        elo_history.c.created_at < before, elo_history.c.model_id.not_in(sa.select(models.c.id))
    )
    return int(conn.execute(query).rowcount)
