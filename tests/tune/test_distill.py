"""Distillation: a smaller network trained on a stronger one's data and targets, registered and rated like any model."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.helpers import FakeClock
from zeroloop.app import App
from zeroloop.artifacts.transfer import ArtifactKind
from zeroloop.config import PipelineSettings, Settings, StoreSettings, TuneSettings, WorkloadSettings
from zeroloop.errors import TuneError, WorkloadError
from zeroloop.events.bus import Event
from zeroloop.pipeline import jobs
from zeroloop.pipeline.coordinator import PipelineCoordinator
from zeroloop.pipeline.executor import JobExecutor
from zeroloop.store.queries import pipelines as pipeline_queries
from zeroloop.store.schema import events
from zeroloop.tune import manager
from zeroloop.tune.distill import DistillRecorder
from zeroloop.workload.alphazero import AlphaZeroWorkload
from zeroloop.workload.network import load_model_file
from zeroloop.workload.protocol import DistillRequest, ExportRequest, SelfplayRequest, TrainRequest, file_sha256

CONFIG = "tic_tac_toe_2p"
TINY = WorkloadSettings(
    torch_threads=1, inference_precision="float32", value_hidden=8, simulations=8, parallel_games=16,
    train_batch_size=64, train_steps=40, checkpoint_every_steps=20, progress_every_steps=20, eval_simulations=4,
    eval_parallel_games=8, overrides={CONFIG: {"blocks": 2, "channels": 16}},
)  # fmt: skip


def _teacher(tmp_path: Path) -> tuple[Path, Path]:
    """A trained 2 x 16 network and the window it was trained on."""
    workload = AlphaZeroWorkload(TINY)
    batch, window, model = tmp_path / "games.npz", tmp_path / "window.npz", tmp_path / "teacher.pt"
    workload.selfplay(SelfplayRequest(CONFIG, batch, games=32, seed=1))
    workload.export(ExportRequest(CONFIG, (batch,), window, 2000))
    workload.train(TrainRequest(CONFIG, window, model, seed=1))
    return model, window


def test_a_distilled_network_is_smaller_learns_its_teachers_policy_and_plays(tmp_path: Path) -> None:
    teacher, window = _teacher(tmp_path)
    workload = AlphaZeroWorkload(TINY)
    student = tmp_path / "student.pt"
    evidence = workload.distill(DistillRequest(CONFIG, teacher, window, student, blocks=1, channels=4, steps=60))
    counts = evidence.counts
    assert evidence.operation == "distill" and evidence.outputs[0].path == student
    assert counts["parameters"] < counts["teacher_parameters"] / 5  # 1 x 4 against 2 x 16
    assert counts["steps"] == 60 and counts["cpu_s"] > 0
    payload = load_model_file(student)
    assert (payload["shape"]["blocks"], payload["shape"]["channels"]) == (1, 4)
    assert payload["distilled_from"] == file_sha256(teacher)
    # Policy agreement is measured against the teacher's own move choice on the window's positions.
    assert counts["policy_agreement"] > 0.3


def test_distillation_refuses_a_window_of_another_game_and_a_shape_that_is_none(tmp_path: Path) -> None:
    teacher, window = _teacher(tmp_path)
    workload = AlphaZeroWorkload(TINY)
    with pytest.raises(WorkloadError, match="a distilled network needs blocks >= 0 and channels >= 1"):
        workload.distill(DistillRequest(CONFIG, teacher, window, tmp_path / "s.pt", blocks=1, channels=0))
    with pytest.raises(WorkloadError, match="does not fit connect_four_2p"):
        workload.distill(DistillRequest("connect_four_2p", teacher, window, tmp_path / "s.pt", blocks=1, channels=4))


@pytest.fixture
def distilling(store_url: str, tmp_path: Path, settings: Settings) -> Iterator[App]:
    settings = Settings(
        data_dir=tmp_path / "data",
        store=StoreSettings(url=store_url),
        workload=TINY,
        pipeline=PipelineSettings(baselines=["random"], baseline_games=4),
        tune=TuneSettings(distill_games=4, distill_steps=30),
    )
    with App(settings, upgrade=False, clock=FakeClock()) as app:
        yield app


def _published(app: App, event_type: str) -> list[Event]:
    with app.store.read() as conn:
        rows = conn.execute(sa.select(events).where(events.c.type == event_type).order_by(events.c.id)).mappings()
        return [Event(r["id"], r["type"], r["payload"], r["source"], r["node"], r["created_at"]) for r in rows]


def _run_all(app: App, executor: JobExecutor, coordinator: PipelineCoordinator, limit: int) -> int:
    done = 0
    for _ in range(limit):
        if not asyncio.run(executor.run_once()):
            break
        done += 1
    for event in _published(app, "EVALUATION_RESULT"):
        coordinator.handle(event)
    return done


def test_a_distilled_model_is_registered_and_rated_in_its_teachers_joint_rating(
    distilling: App, tmp_path: Path
) -> None:
    app = distilling
    with pytest.raises(TuneError, match="nothing to distill: tic_tac_toe_2p has no production model yet"):
        manager.distill(app, CONFIG, blocks=1, channels=4)
    teacher_file, window_file = _teacher(tmp_path)
    window = app.artifacts.put(window_file, ArtifactKind.TRAINING_WINDOW, config_key=CONFIG)
    model = app.artifacts.put(teacher_file, ArtifactKind.MODEL, config_key=CONFIG)
    teacher = app.models.register_candidate(
        config_key=CONFIG, artifact_sha256=model.sha256, parent_id=None, window_sha256=window.sha256, job_ids=[],
        iteration=3,
    )  # fmt: skip
    app.models.promote(teacher.id, reason="test")

    job_id = manager.distill(app, CONFIG, blocks=1, channels=4)
    assert app.queue.get(job_id).payload["window_sha256"] == window.sha256  # the teacher's own data
    executor = JobExecutor(app.models, app.bus, app.queue, app.artifacts, app.settings, node="w1")
    coordinator = PipelineCoordinator(app.store, app.bus, app.queue, app.models, app.settings, clock=app.clock)
    recorder = DistillRecorder(app.store, app.queue, app.models, app.settings, clock=app.clock)
    try:
        assert _run_all(app, executor, coordinator, 1) == 1
        (completed,) = _published(app, "DISTILLATION_COMPLETED")
        recorder.handle(completed)
        recorder.handle(completed)  # a replay changes nothing
        student = app.models.get(completed.payload["model_id"])
        assert student.parent_id == teacher.id and student.meta["iteration"] == -1
        distilled: dict[str, Any] = student.meta["distilled"]
        assert distilled["parameters"] < distilled["teacher_parameters"] and distilled["channels"] == 4
        queued = app.queue.list(job_type=jobs.EVALUATE, config_key=CONFIG, limit=10)
        assert sorted(j.payload["opponent"] for j in queued) == sorted([teacher.id, "random"])
        assert all(j.payload["purpose"] == "tournament" for j in queued)
        assert _run_all(app, executor, coordinator, 5) == 2
    finally:
        executor.close()
    rated = app.models.get(student.id)
    assert rated.meta["rating"]["opponents"] == 2 and rated.meta["rating"]["games"] >= 8  # rated like any model
    with app.store.read() as conn:
        kinds = [(d["kind"], d["outcome"]) for d in pipeline_queries.list_decisions(conn, CONFIG)]
    assert ("distill", "enqueued") in kinds and kinds.count(("distill", "completed")) == 1
