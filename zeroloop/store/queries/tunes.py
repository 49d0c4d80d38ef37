"""Operations on tunes (population-based training of a config key's settings) and their trials.

Also what a tune reads of the rest of the store, named here once: the seconds its keys'
jobs spent, their dead jobs and training losses, their rounds, and their matches.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from zeroloop.store.schema import decisions, jobs, matches, nodes, tune_trials, tunes


def insert_tune(conn: Connection, values: dict[str, Any]) -> int:
    """Record a new tune; its id."""
    return int(conn.execute(sa.insert(tunes).values(**values).returning(tunes.c.id)).scalar_one())


def get_tune(conn: Connection, tune_id: int, *, for_update: bool = False) -> RowMapping | None:
    """One tune (locked for the transaction on PostgreSQL when asked)."""
    query = sa.select(tunes).where(tunes.c.id == tune_id)
    if for_update and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return conn.execute(query).mappings().first()


def list_tunes(conn: Connection, *, config_key: str | None = None, status: str | None = None) -> list[RowMapping]:
    """Tunes, newest first, of one config key and status when given."""
    query = sa.select(tunes).order_by(tunes.c.id.desc())
    if config_key is not None:
        query = query.where(tunes.c.config_key == config_key)
    if status is not None:
        query = query.where(tunes.c.status == status)
    return list(conn.execute(query).mappings())


def update_tune(conn: Connection, tune_id: int, now: float, **values: Any) -> None:
    """Change columns of a tune."""
    conn.execute(sa.update(tunes).where(tunes.c.id == tune_id).values(updated_at=now, **values))


def insert_trial(conn: Connection, values: dict[str, Any]) -> int:
    """Record a trial (one set of settings a variant runs); its id."""
    return int(conn.execute(sa.insert(tune_trials).values(**values).returning(tune_trials.c.id)).scalar_one())


def update_trial(conn: Connection, trial_id: int, now: float, **values: Any) -> None:
    """Change columns of a trial."""
    conn.execute(sa.update(tune_trials).where(tune_trials.c.id == trial_id).values(updated_at=now, **values))


def trials_of(conn: Connection, tune_id: int, *, status: str | None = None) -> list[RowMapping]:
    """A tune's trials, oldest first (of one status when given)."""
    query = sa.select(tune_trials).where(tune_trials.c.tune_id == tune_id).order_by(tune_trials.c.id)
    if status is not None:
        query = query.where(tune_trials.c.status == status)
    return list(conn.execute(query).mappings())


def job_seconds(conn: Connection, config_keys: Iterable[str], since: float) -> dict[str, tuple[float, float]]:
    """CPU- and GPU-seconds of the completed jobs of `config_keys` that finished at or after `since`, per key.

    CPU-seconds are each job's own `cpu_s` count (its process's user and system time);
    GPU-seconds are the wall time of a job that ran on a node with a GPU, which it held
    throughout. A job without a `cpu_s` count (a workload that does not record one) adds none.
    """
    keys = list(config_keys)
    spent = {key: (0.0, 0.0) for key in keys}
    if not keys:
        return spent
    query = (
        sa.select(jobs.c.config_key, jobs.c.result, jobs.c.claimed_at, jobs.c.finished_at, nodes.c.gpus)
        .select_from(jobs.outerjoin(nodes, nodes.c.id == jobs.c.lease_node))
        .where(jobs.c.config_key.in_(keys), jobs.c.status == "completed", jobs.c.finished_at >= since)
    )
    for row in conn.execute(query):
        counts = (row.result or {}).get("counts") or {}
        cpu = float(counts.get("cpu_s", 0.0) or 0.0)
        gpu = 0.0
        if row.gpus and row.claimed_at is not None and row.finished_at is not None:
            gpu = max(0.0, float(row.finished_at) - float(row.claimed_at))
        before = spent[row.config_key]
        spent[row.config_key] = (before[0] + (cpu if math.isfinite(cpu) else 0.0), before[1] + gpu)
    return spent


def dead_jobs(conn: Connection, config_key: str, since: float) -> list[RowMapping]:
    """Jobs of a config key that died (out of attempts) at or after `since`: id, type and error."""
    query = (
        sa.select(jobs.c.id, jobs.c.type, jobs.c.error)
        .where(jobs.c.config_key == config_key, jobs.c.status == "dead", jobs.c.updated_at >= since)
        .order_by(jobs.c.id)
    )
    return list(conn.execute(query).mappings())


def training_losses(conn: Connection, config_key: str, since: float) -> list[tuple[int, float]]:
    """(job id, final loss) of every training job of a config key completed at or after `since`; NaN when absent."""
    query = (
        sa.select(jobs.c.id, jobs.c.result)
        .where(
            jobs.c.config_key == config_key,
            jobs.c.type == "train",
            jobs.c.status == "completed",
            jobs.c.finished_at >= since,
        )
        .order_by(jobs.c.id)
    )
    found = []
    for row in conn.execute(query):
        loss = ((row.result or {}).get("counts") or {}).get("loss")
        found.append((int(row.id), float(loss) if isinstance(loss, int | float) else math.nan))
    return found


def count_decisions(conn: Connection, config_key: str, kind: str, since: float) -> int:
    """How many decisions of `kind` a config key took at or after `since` (promotion: rounds judged)."""
    query = (
        sa.select(sa.func.count())
        .select_from(decisions)
        .where(decisions.c.config_key == config_key, decisions.c.kind == kind, decisions.c.created_at >= since)
    )
    return int(conn.execute(query).scalar_one())


def matches_of_keys(conn: Connection, config_keys: Iterable[str]) -> list[RowMapping]:
    """Every match recorded under any of `config_keys`, oldest first."""
    query = sa.select(matches).where(matches.c.config_key.in_(list(config_keys))).order_by(matches.c.id)
    return list(conn.execute(query).mappings())
