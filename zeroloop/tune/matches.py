"""Matches between variants: each new production model plays the variants nearest to it in rating.

They are `tournament` evaluate jobs under the tune's population key (a key with no
pipeline), so the coordinator records them without any round waiting for them, and the
population's joint rating (zeroloop.tune.rating) reads them with the variants' own matches.
A variant's untrained first network plays none: it says nothing about its settings.
"""

from __future__ import annotations

import math

from zeroloop.config import TuneSettings
from zeroloop.pipeline import jobs
from zeroloop.pipeline.registry import ModelStage
from zeroloop.store.queries import models as model_queries
from zeroloop.store.queries import tunes as queries
from zeroloop.tune.effects import Effects
from zeroloop.tune.names import RUNNING, population_key

MATCH_PRIORITY = 40  # as tournaments: after a round's jobs, before selfplay


def schedule_matches(fx: Effects, settings: TuneSettings, tune_id: int, done: list[str]) -> None:
    """Each new production model plays the `match_opponents` variants nearest in rating."""
    with fx.parts.store.transaction() as conn:
        fx.fence(conn)
        tune = fx.tune(conn, tune_id)
        progress = dict(tune["progress"] or {})
        matched = list(progress.get("matched") or [])
        ratings = progress.get("ratings") or {}
        productions = []
        for trial in queries.trials_of(conn, tune_id, status=RUNNING):
            model = model_queries.production_model(conn, trial["variant"])
            if model is not None and model["stage"] == ModelStage.PRODUCTION.value:
                fresh = bool(((model["meta"] or {}).get("tune") or {}).get("fresh"))
                if not fresh:  # a variant's untrained first network says nothing about its settings
                    productions.append(model)
        key = population_key(tune)
        added = 0
        paired: set[tuple[str, str]] = set()
        for model in productions:
            if model["id"] in matched:
                continue
            mine = _elo(ratings, model["id"])
            others = sorted(
                (m for m in productions if m["config_key"] != model["config_key"]),
                key=lambda m: _distance(_elo(ratings, m["id"]), mine),
            )
            for opponent in others[: settings.match_opponents]:
                first, second = sorted((model, opponent), key=lambda m: m["id"])
                if (first["id"], second["id"]) in paired:
                    continue  # both new in this step: one match serves both
                paired.add((first["id"], second["id"]))
                payload = jobs.EvaluateJob(
                    iteration=int(tune["id"]),
                    model_id=first["id"],
                    model_sha256=first["artifact_sha256"],
                    opponent=second["id"],
                    opponent_kind="model",
                    opponent_sha256=second["artifact_sha256"],
                    games=settings.match_games,
                    seed=len(matched),
                    purpose="tournament",
                )
                fx.parts.queue.enqueue(
                    jobs.EVALUATE,
                    key,
                    payload.model_dump(),
                    priority=MATCH_PRIORITY,
                    idempotency_key=f"{key}:match:{first['id']}:{second['id']}",
                )
                added += 1
            if others:
                matched.append(model["id"])
        if added:
            progress["matched"] = matched
            queries.update_tune(conn, tune_id, fx.clock(), progress=progress)
            done.append(f"{added} matches")


def _elo(ratings: dict[str, list[float]], model_id: str) -> float:
    return float((ratings.get(model_id) or [math.nan])[0])


def _distance(elo: float, mine: float) -> float:
    """How far apart two ratings are; an unrated model (NaN) is as far as can be, so rated neighbours come first."""
    gap = abs(elo - mine)
    return gap if math.isfinite(gap) else math.inf
