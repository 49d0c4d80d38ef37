"""The job-type table: complete and consistent, the payloads it builds, and what it refuses."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from zeroloop.app import App
from zeroloop.artifacts.transfer import ArtifactKind
from zeroloop.errors import QueueError, WorkloadError
from zeroloop.events import catalogue, wiring
from zeroloop.pipeline import executor, jobs
from zeroloop.profiles import WORKER_PROFILES
from zeroloop.queue.jobs import Job, JobStatus, Outcome, Requirements
from zeroloop.workload.protocol import OPERATIONS

SHA = "ab" * 32


def _job(job_type: str, payload: dict[str, Any], job_id: int = 7) -> Job:
    return Job(
        id=job_id,
        type=job_type,
        config_key="tic_tac_toe_2p",
        payload=payload,
        priority=0,
        requires=Requirements(),
        target_node=None,
        idempotency_key=None,
        status=JobStatus.RUNNING,
        attempts=2,
        max_attempts=3,
        timeout_s=60.0,
        run_after=0.0,
        lease_node="n1",
        lease_token=1,
        waiting_on=0,
        has_dependents=False,
        lease_expires_at=None,
        claimed_at=None,
        result=None,
        error=None,
        created_at=0.0,
        updated_at=0.0,
        finished_at=None,
    )


# Per type: a payload the coordinator could enqueue, and the evidence counts of a finished run.
EXAMPLES: dict[str, tuple[dict[str, Any], dict[str, float]]] = {
    jobs.SELFPLAY: ({"games": 4}, {"num_games": 4, "positions": 36}),
    jobs.EXPORT: ({"iteration": 1, "inputs": [SHA], "window_samples": 100}, {"samples": 100}),
    jobs.TRAIN: ({"iteration": 3, "window_sha256": SHA}, {"loss": 1.25, "samples": 100}),
    jobs.EVALUATE: (
        {
            "iteration": 3,
            "model_id": "m3",
            "model_sha256": SHA,
            "opponent": "random",
            "opponent_kind": "random",
            "games": 10,
        },
        {"wins": 7, "draws": 1, "losses": 2, "elo": 150.0, "elo_low": 50.0, "elo_high": 250.0},
    ),
    jobs.DISTILL: (
        {
            "teacher_id": "m3",
            "teacher_sha256": SHA,
            "window_sha256": SHA,
            "iteration": 3,
            "blocks": 1,
            "channels": 16,
        },
        {"loss": 0.5, "samples": 100, "parameters": 9000, "teacher_parameters": 90000},
    ),
}


def test_every_job_type_is_declared_once_and_completely() -> None:
    assert jobs.JOB_TYPES == tuple(jobs.TYPES) == (jobs.SELFPLAY, jobs.EXPORT, jobs.TRAIN, jobs.EVALUATE, jobs.DISTILL)
    assert set(EXAMPLES) == set(jobs.TYPES)
    for name, job_type in jobs.TYPES.items():
        assert job_type.name == name
        assert issubclass(job_type.payload, BaseModel)
        assert isinstance(job_type.kind, ArtifactKind)
        assert job_type.profiles and job_type.profiles <= set(WORKER_PROFILES), name
        unknown = [event for event in job_type.events() if event not in catalogue.EVENT_TYPES]
        assert unknown == [], f"{name} publishes events the catalogue does not declare"
    kinds = [job_type.kind for name, job_type in jobs.TYPES.items() if name != jobs.DISTILL]
    assert len(set(kinds)) == len(kinds)
    assert jobs.TYPES[jobs.DISTILL].kind is ArtifactKind.MODEL  # a distilled network is a model like a trained one


def test_the_executor_declares_every_event_of_the_table() -> None:
    (declared,) = [d for d in wiring.declarations() if d.name == "zeroloop.pipeline.executor"]
    events = {event for job_type in jobs.TYPES.values() for event in job_type.events()}
    assert declared.emits == events


def test_profiles_claim_what_the_table_says() -> None:
    for profile in WORKER_PROFILES:
        types = jobs.profile_job_types(profile)
        assert types == {name for name, job_type in jobs.TYPES.items() if profile in job_type.profiles}
    # job_executor (training_node, ephemeral and full) claims every type: those profiles must run them all.
    assert jobs.profile_job_types("training_node") == jobs.profile_job_types("ephemeral") == set(jobs.JOB_TYPES)
    assert jobs.types_for("selfplay") == (jobs.SELFPLAY,)
    assert jobs.profile_job_types("coordinator") is None


def test_an_unknown_job_type_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(QueueError) as raised:
        jobs.lookup("selfplay_v2")
    assert (
        str(raised.value)
        == "unknown pipeline job type 'selfplay_v2'; known: selfplay, export, train, evaluate, distill"
    )


def test_a_worker_fails_a_job_of_an_unknown_type_with_that_error(app: App) -> None:
    job = app.queue.enqueue("selfplay_v2", "tic_tac_toe_2p", {"games": 1}, max_attempts=1)
    worker = executor.JobExecutor(
        app.models, app.bus, app.queue, app.artifacts, app.settings, node="w1", job_types=("selfplay_v2",)
    )
    try:
        assert asyncio.run(worker.run_once())
    finally:
        worker.close()
    dead = app.queue.get(job.id)
    assert dead.status is JobStatus.DEAD
    assert dead.error == "unknown pipeline job type 'selfplay_v2'; known: selfplay, export, train, evaluate, distill"


def test_a_malformed_payload_is_refused_naming_the_type_and_field() -> None:
    with pytest.raises(QueueError, match=r"^malformed train job payload: window_sha256: Field required$"):
        jobs.lookup(jobs.TRAIN).parse({"iteration": 1})


class _Artifacts:
    def fetch(self, sha256: str) -> Path:
        return Path("/cache") / sha256


class _Models:
    def production(self, config_key: str) -> Any:
        return None


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_prepare_names_the_operation_and_an_output_in_the_work_directory(name: str, tmp_path: Path) -> None:
    job_type = jobs.lookup(name)
    payload, _counts = EXAMPLES[name]
    job = _job(name, payload)
    parts = jobs.Parts(_Artifacts(), _Models(), tmp_path)  # type: ignore[arg-type]
    prepared = job_type.prepare(job, job_type.parse(payload), parts)
    assert prepared.operation == name and prepared.operation in OPERATIONS
    assert prepared.output.parent == tmp_path


def test_a_model_opponent_without_its_sha256_is_refused(tmp_path: Path) -> None:
    payload = {**EXAMPLES[jobs.EVALUATE][0], "opponent": "m2", "opponent_kind": "model"}
    job_type = jobs.lookup(jobs.EVALUATE)
    parts = jobs.Parts(_Artifacts(), _Models(), tmp_path)  # type: ignore[arg-type]
    with pytest.raises(QueueError, match="evaluate job 7 names a model opponent without its sha256"):
        job_type.prepare(_job(jobs.EVALUATE, payload), job_type.parse(payload), parts)


def _outcome(name: str, counts: dict[str, float] | None = None) -> Outcome:
    job_type = jobs.lookup(name)
    payload, example = EXAMPLES[name]
    counts = example if counts is None else counts
    job = _job(name, payload)
    samples = int(counts.get("positions", counts.get("samples", 0)))
    finished = jobs.Finished(job, job_type.parse(payload), SHA, counts, samples, 0.95)
    return job_type.outcome.build(job, finished)


def test_outcome_events_carry_the_payloads_their_consumers_read() -> None:
    base = {"config_key": "tic_tac_toe_2p", "job_id": 7}
    expected = {
        jobs.SELFPLAY: ("SELFPLAY_COMPLETE", {**base, "artifact_sha256": SHA, "games": 4, "samples": 36}),
        jobs.EXPORT: ("NPZ_EXPORT_COMPLETE", {**base, "window_sha256": SHA, "samples": 100}),
        jobs.TRAIN: (
            "TRAINING_COMPLETED",
            {
                **base,
                "model_id": f"tic_tac_toe_2p-0003-{SHA[:8]}",
                "artifact_sha256": SHA,
                "loss": 1.25,
                "samples": 100,
            },
        ),
        jobs.EVALUATE: (
            "EVALUATION_RESULT",
            {
                **base,
                "model_id": "m3",
                "opponent": "random",
                "wins": 7,
                "draws": 1,
                "losses": 2,
                "elo_diff": 150.0,
                "elo_ci": 100.0,
            },
        ),
        jobs.DISTILL: (
            "DISTILLATION_COMPLETED",
            {
                **base,
                "model_id": f"tic_tac_toe_2p-0003-{SHA[:8]}",
                "artifact_sha256": SHA,
                "teacher_id": "m3",
                "loss": 0.5,
                "samples": 100,
                "parameters": 9000,
                "teacher_parameters": 90000,
            },
        ),
    }
    for name, (event_type, payload) in expected.items():
        got_type, got, dedup = _outcome(name)
        assert (got_type, list(got.items()), dedup) == (event_type, list(payload.items()), f"{event_type}:7")
        catalogue.validate(got_type, dict(got))


def test_a_train_outcome_without_a_loss_reports_nan() -> None:
    _type, payload, _dedup = _outcome(jobs.TRAIN, {"samples": 100})
    assert math.isnan(payload["loss"])


def test_an_incomplete_match_result_is_refused_before_upload() -> None:
    check = jobs.lookup(jobs.EVALUATE).check
    assert check is not None
    with pytest.raises(WorkloadError, match="match result of job 7 lacks draws, losses"):
        check(_job(jobs.EVALUATE, EXAMPLES[jobs.EVALUATE][0]), {"wins": 3})
    assert all(jobs.lookup(name).check is None for name in (jobs.SELFPLAY, jobs.EXPORT, jobs.TRAIN))


def test_training_announces_its_start_once_per_attempt_and_its_progress() -> None:
    train = jobs.lookup(jobs.TRAIN)
    assert train.started is not None and train.progress is not None
    job = _job(jobs.TRAIN, EXAMPLES[jobs.TRAIN][0])
    started = train.started.build(job, jobs.Started(job, train.parse(job.payload), "n1"))
    assert started == (
        "TRAINING_STARTED",
        {"config_key": "tic_tac_toe_2p", "job_id": 7, "iteration": 3, "node": "n1"},
        "training-started:7:2",
    )
    report = {"step": 280.0, "loss": 1.5, "samples_per_s": 900.0}
    progress = train.progress.build(job, jobs.Progress(job, report))
    assert progress == (
        "TRAINING_PROGRESS",
        {"config_key": "tic_tac_toe_2p", "job_id": 7, "step": 280.0, "loss": 1.5, "samples_per_s": 900.0},
        None,
    )
    others = [jobs.lookup(name) for name in (jobs.SELFPLAY, jobs.EXPORT, jobs.EVALUATE, jobs.DISTILL)]
    assert all(job_type.started is None and job_type.progress is None for job_type in others)
