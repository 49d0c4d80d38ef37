"""The model registry: lineage, stages, matches and Elo of every model.

Stages: candidate (trained, not yet judged), production (the one model of its config key
that selfplay uses), archived (a former production model), rejected (judged and not
promoted). Promotion and rollback change two rows and publish MODEL_PROMOTED in one
transaction; the event's dedup key is the model id, so a model is promoted at most once
however often the decision is replayed.

Ratings are one joint fit (zeroloop.pipeline.bradley_terry): every match recorded refits
every player of its config key from all its matches, in the transaction that records
the match, with random play anchored at 0. Each rated model's Elo goes into its `elo`
column and its standard error, games and opponents into meta["rating"]; the baselines'
(the MCTS player) into the pipeline's progress record under "ratings". Screens, the
policy and the benchmark all read these stored numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy.engine import Connection, RowMapping

from zeroloop.config import EvaluationSettings
from zeroloop.errors import RegistryError
from zeroloop.events.bus import EventBus
from zeroloop.events.wiring import declare
from zeroloop.store.database import Store
from zeroloop.store.queries import models as queries
from zeroloop.store.queries import pipelines as pipeline_queries

declare("zeroloop.pipeline.registry", emits=("MODEL_PROMOTED", "MODEL_REJECTED"))

BASELINE_ELO = {"random": 0.0}

Guard = Callable[[Connection], None]


def model_id_for(config_key: str, iteration: int, artifact_sha256: str) -> str:
    """The id a trained model gets: readable, and the same wherever it is computed."""
    return f"{config_key}-{iteration:04d}-{artifact_sha256[:8]}"


class ModelStage(StrEnum):
    """Where a model stands."""

    CANDIDATE = "candidate"
    PRODUCTION = "production"
    ARCHIVED = "archived"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Model:
    """A registered model (times: epoch seconds; elo: Elo points, random play = 0)."""

    id: str
    config_key: str
    artifact_sha256: str
    parent_id: str | None
    window_sha256: str | None
    job_ids: list[int]
    stage: ModelStage
    elo: float
    created_at: float
    promoted_at: float | None
    meta: dict[str, Any]

    @classmethod
    def of(cls, row: RowMapping) -> Model:
        """Build from a `models` row."""
        return cls(
            id=row["id"],
            config_key=row["config_key"],
            artifact_sha256=row["artifact_sha256"],
            parent_id=row["parent_id"],
            window_sha256=row["window_sha256"],
            job_ids=list(row["job_ids"]),
            stage=ModelStage(row["stage"]),
            elo=float(row["elo"]),
            created_at=float(row["created_at"]),
            promoted_at=row["promoted_at"],
            meta=dict(row["meta"]),
        )


class ModelRegistry:
    """Named operations on models; every write runs in (or joins) one store transaction."""

    def __init__(
        self,
        store: Store,
        bus: EventBus,
        clock: Callable[[], float] = time.time,
        *,
        evaluation: EvaluationSettings | None = None,
    ) -> None:
        """`evaluation` holds the rating's prior (default: EvaluationSettings())."""
        self.store = store
        self.bus = bus
        self.clock = clock
        self.evaluation = evaluation or EvaluationSettings()

    def register_candidate(
        self,
        *,
        config_key: str,
        artifact_sha256: str,
        parent_id: str | None,
        window_sha256: str | None,
        job_ids: list[int],
        iteration: int,
        meta: dict[str, Any] | None = None,
    ) -> Model:
        """Register a freshly trained model as a candidate; the same artifact registers once."""
        model_id = model_id_for(config_key, iteration, artifact_sha256)
        with self.store.transaction() as conn:
            parent = queries.get_model(conn, parent_id) if parent_id else None
            queries.insert_model(
                conn,
                {
                    "id": model_id,
                    "config_key": config_key,
                    "artifact_sha256": artifact_sha256,
                    "parent_id": parent_id,
                    "window_sha256": window_sha256,
                    "job_ids": job_ids,
                    "stage": ModelStage.CANDIDATE.value,
                    "elo": float(parent["elo"]) if parent else 0.0,
                    "created_at": self.clock(),
                    "promoted_at": None,
                    "meta": {"iteration": iteration, **(meta or {})},
                },
            )
            return self._get(conn, model_id)

    def get(self, model_id: str) -> Model:
        """One model; RegistryError if unknown."""
        with self.store.read() as conn:
            return self._get(conn, model_id)

    def production(self, config_key: str) -> Model | None:
        """The production model of a config key, or None before the first promotion."""
        with self.store.read() as conn:
            row = queries.production_model(conn, config_key)
        return Model.of(row) if row else None

    def productions(self) -> list[Model]:
        """The production model of every config key that has one, by config key."""
        with self.store.read() as conn:
            return [Model.of(row) for row in queries.production_models(conn)]

    def list_models(self, config_key: str | None = None, limit: int = 200) -> list[Model]:
        """Models, newest first."""
        with self.store.read() as conn:
            return [Model.of(row) for row in queries.list_models(conn, config_key=config_key, limit=limit)]

    def promote(self, model_id: str, *, reason: str, guard: Guard | None = None) -> bool:
        """Make a model production (the former one archived); False if it already was. `guard` checks a lease."""
        with self.store.transaction() as conn:
            if guard is not None:
                guard(conn)
            model = self._get(conn, model_id)
            if model.stage is ModelStage.PRODUCTION:
                return False
            if model.stage is ModelStage.REJECTED and reason != "manual":
                raise RegistryError(f"model {model_id} was rejected; promote it by hand if you mean it")
            previous = queries.production_model(conn, model.config_key, for_update=True)
            now = self.clock()
            if previous is not None:
                queries.set_stage(conn, previous["id"], ModelStage.ARCHIVED.value)
            queries.set_stage(conn, model_id, ModelStage.PRODUCTION.value, promoted_at=now)
            pipeline_queries.ensure_pipeline(conn, model.config_key, now)
            pipeline_queries.update_pipeline(
                conn, model.config_key, now, current_model_id=model_id, last_promotion_at=now
            )
            self.bus.publish(
                "MODEL_PROMOTED",
                {
                    "config_key": model.config_key,
                    "model_id": model_id,
                    "artifact_sha256": model.artifact_sha256,
                    "previous_model_id": previous["id"] if previous else None,
                    "reason": reason,
                },
                dedup_key=f"promote:{model_id}:{now}" if reason in ("manual", "rollback") else f"promote:{model_id}",
            )
            return True

    def reject(self, model_id: str, *, reason: str) -> None:
        """Mark a candidate rejected and announce it."""
        with self.store.transaction() as conn:
            model = self._get(conn, model_id)
            if model.stage is not ModelStage.CANDIDATE:
                return
            queries.set_stage(conn, model_id, ModelStage.REJECTED.value)
            self.bus.publish(
                "MODEL_REJECTED",
                {"config_key": model.config_key, "model_id": model_id, "reason": reason},
                dedup_key=f"reject:{model_id}",
            )

    def rollback(self, config_key: str, *, guard: Guard | None = None) -> Model:
        """Return production to the previously promoted model; the current one is rejected."""
        with self.store.transaction() as conn:
            if guard is not None:
                guard(conn)
            current = queries.production_model(conn, config_key, for_update=True)
            previous = queries.previous_production(conn, config_key)
            if current is None or previous is None:
                raise RegistryError(f"{config_key} has no earlier production model to roll back to")
            self.promote(previous["id"], reason="rollback")  # joins this transaction; archives `current`
            queries.set_stage(conn, current["id"], ModelStage.REJECTED.value)
            return self._get(conn, previous["id"])

    def record_match(
        self,
        *,
        config_key: str,
        model_id: str,
        opponent: str,
        wins: int,
        draws: int,
        losses: int,
        elo_diff: float,
        elo_ci: float,
        job_id: int | None,
    ) -> int | None:
        """Record a match of `model_id` against `opponent` (a model id or a baseline); None if already recorded.

        `elo_diff` is recorded as the match reported it; every rating of the config key is then refitted.
        """
        with self.store.transaction() as conn:
            if job_id is not None and queries.count_matches_of_job(conn, job_id):
                return None
            now = self.clock()
            match_id = queries.insert_match(
                conn,
                {
                    "config_key": config_key,
                    "player_a": model_id,
                    "player_b": opponent,
                    "wins": wins,
                    "draws": draws,
                    "losses": losses,
                    "elo_diff": elo_diff,
                    "elo_ci": elo_ci,
                    "job_id": job_id,
                    "created_at": now,
                },
            )
            rated = self.refit(conn, config_key).get(model_id)
            if rated is not None:
                queries.insert_elo(
                    conn, model_id=model_id, config_key=config_key, elo=rated, match_id=match_id, now=now
                )
            return match_id

    def refit(self, conn: Connection, config_key: str) -> dict[str, float]:
        """Fit every rating of a config key from all its matches and store them; return Elo by player.

        Imported here, not at the top: numpy stays out of the screens, which only read the results.
        """
        from zeroloop.pipeline import bradley_terry

        rows = queries.matches_of_config(conn, config_key)
        pairings = [
            bradley_terry.Pairing(r["player_a"], r["player_b"], r["wins"], r["draws"], r["losses"]) for r in rows
        ]
        start = {
            row["id"]: float(row["elo"]) for row in queries.list_models(conn, config_key=config_key, limit=100_000)
        }
        fitted = bradley_terry.fit(
            pairings, BASELINE_ELO, prior_games=self.evaluation.rating_prior_games, start=start
        ).ratings
        now = self.clock()
        baselines: dict[str, dict[str, float]] = {}
        for name, estimate in fitted.items():
            record = {
                "elo": estimate.elo,
                "stderr": estimate.stderr,
                "games": estimate.games,
                "opponents": estimate.opponents,
                "fitted_at": now,
            }
            if name in start:
                queries.set_rating(conn, name, estimate.elo, record)
            else:
                baselines[name] = record
        if baselines:
            pipeline_queries.merge_progress(conn, config_key, {"ratings": baselines}, now)
        return {name: estimate.elo for name, estimate in fitted.items()}

    def matches(self, model_id: str) -> list[dict[str, Any]]:
        """Every match a model played, oldest first."""
        with self.store.read() as conn:
            return [dict(row) for row in queries.matches_of(conn, model_id)]

    def _get(self, conn: Connection, model_id: str) -> Model:
        row = queries.get_model(conn, model_id)
        if row is None:
            raise RegistryError(f"no model {model_id!r}: see `zeroloop models ls`")
        return Model.of(row)
