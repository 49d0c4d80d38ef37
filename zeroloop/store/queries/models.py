"""Operations on the model registry: models, their stages, matches and Elo history."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from zeroloop.store.schema import elo_history, matches, models


def insert_model(conn: Connection, row: dict[str, Any]) -> bool:
    """Register a model; False (no change) when its id is already registered."""
    if conn.execute(sa.select(models.c.id).where(models.c.id == row["id"])).first() is not None:
        return False
    conn.execute(sa.insert(models).values(**row))
    return True


def get_model(conn: Connection, model_id: str) -> RowMapping | None:
    """One model row, or None."""
    return conn.execute(sa.select(models).where(models.c.id == model_id)).mappings().first()


def production_model(conn: Connection, config_key: str, *, for_update: bool = False) -> RowMapping | None:
    """The production model of a config key, or None before the first promotion."""
    query = sa.select(models).where(models.c.config_key == config_key, models.c.stage == "production")
    if for_update and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return conn.execute(query).mappings().first()


def production_models(conn: Connection) -> list[RowMapping]:
    """The production model of every config key that has one, ordered by config key."""
    query = sa.select(models).where(models.c.stage == "production").order_by(models.c.config_key)
    return list(conn.execute(query).mappings())


def set_stage(conn: Connection, model_id: str, stage: str, *, promoted_at: float | None = None) -> None:
    """Move a model to another stage (promoted_at: epoch seconds, set when it becomes production)."""
    values: dict[str, Any] = {"stage": stage}
    if promoted_at is not None:
        values["promoted_at"] = promoted_at
    conn.execute(sa.update(models).where(models.c.id == model_id).values(**values))


def set_elo(conn: Connection, model_id: str, elo: float) -> None:
    """Record a model's current Elo rating."""
    conn.execute(sa.update(models).where(models.c.id == model_id).values(elo=elo))


def list_models(conn: Connection, *, config_key: str | None = None, limit: int = 200) -> list[RowMapping]:
    """Models, newest first, optionally of one config key."""
    query = sa.select(models)
    if config_key is not None:
        query = query.where(models.c.config_key == config_key)
    return list(conn.execute(query.order_by(models.c.created_at.desc()).limit(limit)).mappings())


def previous_production(conn: Connection, config_key: str) -> RowMapping | None:
    """The most recently promoted model that is now archived: the target of a rollback."""
    query = (
        sa.select(models)
        .where(models.c.config_key == config_key, models.c.stage == "archived", models.c.promoted_at.is_not(None))
        .order_by(models.c.promoted_at.desc())
        .limit(1)
    )
    return conn.execute(query).mappings().first()


def insert_match(conn: Connection, row: dict[str, Any]) -> int:
    """Record a finished match; return its id."""
    return int(conn.execute(sa.insert(matches).values(**row).returning(matches.c.id)).scalar_one())


def matches_of(conn: Connection, player: str) -> list[RowMapping]:
    """Every match `player` (a model id) played as the first player, oldest first."""
    query = sa.select(matches).where(matches.c.player_a == player).order_by(matches.c.id)
    return list(conn.execute(query).mappings())


def count_matches_of_job(conn: Connection, job_id: int) -> int:
    """How many matches a job recorded (0 or 1: recording is idempotent per job)."""
    query = sa.select(sa.func.count()).select_from(matches).where(matches.c.job_id == job_id)
    return int(conn.execute(query).scalar_one())


def insert_elo(
    conn: Connection, *, model_id: str, config_key: str, elo: float, match_id: int | None, now: float
) -> None:
    """Append a point to a model's Elo history."""
    conn.execute(
        sa.insert(elo_history).values(
            model_id=model_id, config_key=config_key, elo=elo, match_id=match_id, created_at=now
        )
    )


def elo_history_of(conn: Connection, config_key: str, *, since: float = 0.0) -> list[RowMapping]:
    """The Elo history of a config key's models, oldest first."""
    query = (
        sa.select(elo_history)
        .where(elo_history.c.config_key == config_key, elo_history.c.created_at >= since)
        .order_by(elo_history.c.created_at, elo_history.c.id)
    )
    return list(conn.execute(query).mappings())


def matches_of_config(conn: Connection, config_key: str) -> list[RowMapping]:
    """Every match of a config key, oldest first (what the joint rating is fitted on)."""
    query = sa.select(matches).where(matches.c.config_key == config_key).order_by(matches.c.id)
    return list(conn.execute(query).mappings())


def matches_between(conn: Connection, config_key: str, first: str, second: str) -> list[RowMapping]:
    """Every match of a config key between two players, in either seat order, oldest first."""
    pair = sa.or_(
        sa.and_(matches.c.player_a == first, matches.c.player_b == second),
        sa.and_(matches.c.player_a == second, matches.c.player_b == first),
    )
    query = sa.select(matches).where(matches.c.config_key == config_key, pair).order_by(matches.c.id)
    return list(conn.execute(query).mappings())


def set_rating(conn: Connection, model_id: str, elo: float, rating: dict[str, Any]) -> None:
    """Record a model's joint rating: Elo in the `elo` column, its standard error and support in meta["rating"]."""
    row = conn.execute(sa.select(models.c.meta).where(models.c.id == model_id)).first()
    if row is None:
        return
    conn.execute(sa.update(models).where(models.c.id == model_id).values(elo=elo, meta={**row.meta, "rating": rating}))


def ids_of_artifacts(conn: Connection, shas: list[str]) -> dict[str, str]:
    """The model id of each artifact sha256 that is a model's file (others absent)."""
    if not shas:
        return {}
    query = sa.select(models.c.artifact_sha256, models.c.id).where(models.c.artifact_sha256.in_(sorted(set(shas))))
    return {str(sha): str(model_id) for sha, model_id in conn.execute(query)}
