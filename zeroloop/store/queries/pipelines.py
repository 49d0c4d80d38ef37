"""Operations on pipeline state per config key, and the decisions taken with their evidence."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from zeroloop.store.schema import decisions, pipelines


def ensure_pipeline(conn: Connection, config_key: str, now: float) -> None:
    """Create the pipeline row of a config key in stage SELFPLAY if it does not exist."""
    if conn.execute(sa.select(pipelines.c.config_key).where(pipelines.c.config_key == config_key)).first():
        return
    conn.execute(
        sa.insert(pipelines).values(
            config_key=config_key,
            stage="selfplay",
            iteration=0,
            samples_total=0,
            samples_since_training=0,
            current_model_id=None,
            paused=False,
            pause_reason=None,
            last_promotion_at=None,
            progress={},
            updated_at=now,
        )
    )


def get_pipeline(conn: Connection, config_key: str, *, for_update: bool = False) -> RowMapping | None:
    """The pipeline row of a config key (locked for the transaction on PostgreSQL when asked)."""
    query = sa.select(pipelines).where(pipelines.c.config_key == config_key)
    if for_update and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return conn.execute(query).mappings().first()


def list_pipelines(conn: Connection) -> list[RowMapping]:
    """Every pipeline row, by config key."""
    return list(conn.execute(sa.select(pipelines).order_by(pipelines.c.config_key)).mappings())


def update_pipeline(conn: Connection, config_key: str, now: float, **values: Any) -> None:
    """Change columns of a pipeline row."""
    conn.execute(sa.update(pipelines).where(pipelines.c.config_key == config_key).values(updated_at=now, **values))


def merge_progress(conn: Connection, config_key: str, changes: dict[str, Any], now: float) -> None:
    """Merge `changes` into the pipeline's progress record (what status screens show)."""
    row = conn.execute(sa.select(pipelines.c.progress).where(pipelines.c.config_key == config_key)).first()
    if row is None:
        return
    conn.execute(
        sa.update(pipelines)
        .where(pipelines.c.config_key == config_key)
        .values(progress={**(row.progress or {}), **changes}, updated_at=now)
    )


def add_samples(conn: Connection, config_key: str, samples: int, now: float) -> None:
    """Count new samples toward the total and toward the next training."""
    conn.execute(
        sa.update(pipelines)
        .where(pipelines.c.config_key == config_key)
        .values(
            samples_total=pipelines.c.samples_total + samples,
            samples_since_training=pipelines.c.samples_since_training + samples,
            updated_at=now,
        )
    )


def insert_decision(
    conn: Connection, *, config_key: str, kind: str, outcome: str, evidence: dict[str, Any], now: float
) -> int:
    """Record a decision (e.g. promotion: promoted/rejected) with the evidence it was taken on."""
    return int(
        conn.execute(
            sa.insert(decisions)
            .values(config_key=config_key, kind=kind, outcome=outcome, evidence=evidence, created_at=now)
            .returning(decisions.c.id)
        ).scalar_one()
    )


def list_decisions(conn: Connection, config_key: str, *, limit: int = 50) -> list[RowMapping]:
    """Recent decisions of a config key, newest first."""
    query = (
        sa.select(decisions).where(decisions.c.config_key == config_key).order_by(decisions.c.id.desc()).limit(limit)
    )
    return list(conn.execute(query).mappings())
