"""The coordinator driven by constructed events, on both backends: a whole round, replays, failures."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from zeroloop.config import Settings
from zeroloop.events.bus import Event, EventBus
from zeroloop.pipeline import jobs
from zeroloop.pipeline.coordinator import PipelineCoordinator
from zeroloop.pipeline.registry import ModelRegistry, ModelStage
from zeroloop.pipeline.stages import Stage
from zeroloop.queue.jobs import JobStatus
from zeroloop.queue.manager import JobQueue
from zeroloop.store.database import Store
from zeroloop.store.queries import artifacts as artifact_queries
from zeroloop.store.queries import pipelines as queries
from zeroloop.store.schema import events

CONFIG = "tic_tac_toe_2p"


class _Artifacts:
    def fetch(self, sha256: str) -> Path:
        return Path("/cache") / sha256


class Loop:
    """A coordinator with its queue and registry over one store, and helpers to feed it events."""

    def __init__(self, store: Store, settings: Settings) -> None:
        ticks = itertools.count(1000)
        self.clock = lambda: float(next(ticks))
        self.store = store
        self.bus = EventBus(store, node="n1", source="test", clock=self.clock)
        self.queue = JobQueue(store, self.bus, settings, clock=self.clock)
        self.models = ModelRegistry(store, self.bus, clock=self.clock)
        self.coordinator = PipelineCoordinator(store, self.bus, self.queue, self.models, settings, clock=self.clock)
        self.ids = itertools.count(1)

    def event(self, event_type: str, payload: dict[str, Any]) -> Event:
        return Event(next(self.ids), event_type, {"config_key": CONFIG, **payload}, "test", "n1", self.clock())

    def feed(self, event: Event) -> None:
        self.coordinator.handle(event)

    def state(self) -> dict[str, Any]:
        with self.store.read() as conn:
            row = queries.get_pipeline(conn, CONFIG)
        assert row is not None
        return dict(row)

    def run_job(self, job_type: str) -> Any:
        """Claim the one queued job of `job_type` and complete it, as a worker would."""
        lease = self.queue.claim("n1", types=[job_type])
        assert lease is not None, f"no {job_type} job queued"
        self.queue.complete(lease.job.id, lease.token, {"ok": True})
        return lease.job

    def batch(self, sha: str, samples: int) -> Event:
        with self.store.transaction() as conn:
            artifact_queries.record_artifact(
                conn,
                {
                    "sha256": sha,
                    "kind": "game_batch",
                    "size_bytes": 10,
                    "config_key": CONFIG,
                    "meta": {"samples": samples},
                    "created_at": self.clock(),
                },
            )
        return self.event("SELFPLAY_COMPLETE", {"job_id": 1, "artifact_sha256": sha, "games": 4, "samples": samples})

    def published(self, event_type: str) -> list[dict[str, Any]]:
        with self.store.read() as conn:
            query = sa.select(events.c.payload).where(events.c.type == event_type).order_by(events.c.id)
            return list(conn.execute(query).scalars())


@pytest.fixture
def loop(store: Store, settings: Settings) -> Loop:
    settings.pipeline.train_after_samples = 10
    settings.pipeline.window_samples = 15
    settings.pipeline.baselines = ["random"]
    settings.pipeline.eval_games = 10
    settings.pipeline.min_eval_games = 10
    return Loop(store, settings)


def _play_round(loop: Loop, iteration: int, wins: int) -> str:
    loop.feed(loop.batch(f"{iteration}a" + "0" * 62, 8))
    assert loop.state()["stage"] == Stage.SELFPLAY  # 8 < 10 samples: not yet
    loop.feed(loop.batch(f"{iteration}b" + "0" * 62, 8))
    assert loop.state()["stage"] == Stage.EXPORT
    export = loop.run_job(jobs.EXPORT)
    loop.feed(loop.event("NPZ_EXPORT_COMPLETE", {"job_id": export.id, "window_sha256": "c" * 64, "samples": 16}))
    assert loop.state()["stage"] == Stage.TRAINING
    train = loop.run_job(jobs.TRAIN)
    model_sha = f"{iteration:02d}" + "d" * 62
    completed = {"job_id": train.id, "model_id": "x", "artifact_sha256": model_sha, "loss": 1.0, "samples": 16}
    loop.feed(loop.event("TRAINING_COMPLETED", completed))
    assert loop.state()["stage"] == Stage.EVALUATION
    model_id = ""
    for _ in range(2 if iteration else 1):
        evaluate = loop.run_job(jobs.EVALUATE)
        model_id = evaluate.payload["model_id"]
        result = {
            "job_id": evaluate.id,
            "model_id": model_id,
            "opponent": evaluate.payload["opponent"],
            "wins": wins,
            "draws": 0,
            "losses": 10 - wins,
            "elo_diff": 100.0,
            "elo_ci": 50.0,
        }
        loop.feed(loop.event("EVALUATION_RESULT", result))
    return model_id


def test_a_round_runs_from_selfplay_to_promotion(loop: Loop) -> None:
    first = _play_round(loop, 0, wins=10)
    state = loop.state()
    assert (state["stage"], state["iteration"], state["current_model_id"]) == (Stage.SELFPLAY, 1, first)
    assert state["samples_total"] == 16
    export_job = loop.queue.list(job_type=jobs.EXPORT)[0]
    assert export_job.payload["inputs"] == ["0a" + "0" * 62, "0b" + "0" * 62]
    assert [event["model_id"] for event in loop.published("MODEL_PROMOTED")] == [first]
    assert len(loop.published("GAME_BATCH_READY")) == 2
    train_two = _play_round(loop, 1, wins=10)
    candidate = loop.models.get(train_two)
    assert candidate.parent_id == first
    assert candidate.stage is ModelStage.PRODUCTION
    assert loop.models.get(first).stage is ModelStage.ARCHIVED


def test_a_weak_candidate_is_rejected_and_the_loop_goes_on(loop: Loop) -> None:
    first = _play_round(loop, 0, wins=10)
    second = _play_round(loop, 1, wins=5)
    assert loop.models.get(second).stage is ModelStage.REJECTED
    state = loop.state()
    assert (state["stage"], state["iteration"], state["current_model_id"]) == (Stage.SELFPLAY, 2, first)
    with loop.store.read() as conn:
        outcomes = [row["outcome"] for row in queries.list_decisions(conn, CONFIG)]
    assert outcomes == ["rejected", "promoted"]


def test_replayed_events_change_nothing(loop: Loop) -> None:
    loop.feed(loop.batch("1" * 64, 12))
    export = loop.run_job(jobs.EXPORT)
    done = loop.event("NPZ_EXPORT_COMPLETE", {"job_id": export.id, "window_sha256": "c" * 64, "samples": 12})
    loop.feed(done)
    loop.feed(done)
    assert len(loop.queue.list(job_type=jobs.TRAIN)) == 1
    assert loop.state()["stage"] == Stage.TRAINING


def test_a_dead_training_job_ends_the_round(loop: Loop) -> None:
    loop.feed(loop.batch("1" * 64, 12))
    export = loop.run_job(jobs.EXPORT)
    loop.feed(loop.event("NPZ_EXPORT_COMPLETE", {"job_id": export.id, "window_sha256": "c" * 64, "samples": 12}))
    train = loop.queue.list(job_type=jobs.TRAIN)[0]
    dead = {"job_id": train.id, "job_type": jobs.TRAIN, "error": "out of memory"}
    loop.feed(loop.event("JOB_DEAD", dead))
    state = loop.state()
    assert (state["stage"], state["iteration"]) == (Stage.SELFPLAY, 1)


def test_paused_pipeline_does_not_start_a_round_until_resumed(loop: Loop) -> None:
    loop.feed(loop.batch("1" * 64, 4))
    with loop.store.transaction() as conn:
        queries.update_pipeline(conn, CONFIG, 1.0, paused=True, pause_reason="test")
    loop.feed(loop.batch("2" * 64, 12))
    assert loop.state()["stage"] == Stage.SELFPLAY
    assert loop.queue.list(statuses=[JobStatus.QUEUED], job_type=jobs.EXPORT) == []
    with loop.store.transaction() as conn:
        queries.update_pipeline(conn, CONFIG, 1.0, paused=False, pause_reason=None)
    loop.feed(loop.event("PIPELINE_RESUMED", {"reason": "test"}))
    assert loop.state()["stage"] == Stage.EXPORT


def _train_round(loop: Loop, sha: str, samples: int) -> Any:
    """Feed one batch of `samples`, run the export it starts, and return the queued training job."""
    loop.feed(loop.batch(sha, samples))
    export = loop.run_job(jobs.EXPORT)
    assert export.payload["new_samples"] == samples
    done = {"job_id": export.id, "window_sha256": "c" * 64, "samples": samples}
    loop.feed(loop.event("NPZ_EXPORT_COMPLETE", done))
    (train,) = loop.queue.list(statuses=[JobStatus.QUEUED], job_type=jobs.TRAIN)
    return train


def test_training_steps_follow_the_new_samples_when_a_ratio_is_set(store: Store, settings: Settings) -> None:
    settings.pipeline.train_after_samples = 10
    settings.pipeline.train_samples_per_sample = 6.0
    loop = Loop(store, settings)
    train = _train_round(loop, "1" * 64, 37)
    assert train.payload["rows"] == 222  # 6 x 37 new samples; the workload divides by its own batch size
    prepared = jobs.lookup(jobs.TRAIN).prepare(
        train,
        jobs.TrainJob.model_validate(train.payload),
        jobs.Parts(_Artifacts(), None, Path("/work")),  # type: ignore[arg-type]
    )
    assert prepared.request.rows == 222  # what the workload is asked to draw


def test_without_a_ratio_training_runs_the_workloads_own_steps(loop: Loop) -> None:
    train = _train_round(loop, "1" * 64, 37)
    assert train.payload["rows"] is None


def test_with_no_gate_a_trained_candidate_is_promoted_at_once(store: Store, settings: Settings) -> None:
    settings.pipeline.train_after_samples = 10
    settings.evaluation.gate = "none"
    loop = Loop(store, settings)
    for round_number in range(2):
        train = _train_round(loop, f"{round_number}" * 64, 12)
        loop.queue.complete(loop.queue.claim("n1", types=[jobs.TRAIN]).job.id, 1, {"ok": True})  # type: ignore[union-attr]
        sha = f"{round_number:02d}" + "d" * 62
        completed = {"job_id": train.id, "model_id": "x", "artifact_sha256": sha, "loss": 1.0, "samples": 12}
        loop.feed(loop.event("TRAINING_COMPLETED", completed))
        state = loop.state()
        assert (state["stage"], state["iteration"]) == (Stage.SELFPLAY, round_number + 1)
        assert loop.queue.list(job_type=jobs.EVALUATE) == []  # no match was played or queued
        assert loop.models.get(state["current_model_id"]).artifact_sha256 == sha
    with loop.store.read() as conn:
        decisions = queries.list_decisions(conn, CONFIG)
    assert [row["outcome"] for row in decisions] == ["promoted", "promoted"]
    assert decisions[0]["evidence"]["reason"].startswith("no gate")
    assert decisions[0]["evidence"]["vs_best"] is None


def test_a_config_keys_overrides_set_its_rounds_alone(store: Store, settings: Settings) -> None:
    settings.pipeline.overrides = {CONFIG: {"train_after_samples": 10, "train_samples_per_sample": 6.0}}
    settings.evaluation.overrides = {CONFIG: {"gate": "none"}}
    assert (settings.pipeline.train_after_samples, settings.evaluation.gate) == (4096, "non_inferior")
    loop = Loop(store, settings)
    train = _train_round(loop, "1" * 64, 12)  # 12 new samples start a round: this key's 10, not 4,096
    assert train.payload["rows"] == 72
    loop.queue.complete(loop.queue.claim("n1", types=[jobs.TRAIN]).job.id, 1, {"ok": True})  # type: ignore[union-attr]
    completed = {"job_id": train.id, "model_id": "x", "artifact_sha256": "d" * 64, "loss": 1.0, "samples": 12}
    loop.feed(loop.event("TRAINING_COMPLETED", completed))
    assert loop.queue.list(job_type=jobs.EVALUATE) == []  # this key's gate: none
    assert loop.state()["current_model_id"] is not None
