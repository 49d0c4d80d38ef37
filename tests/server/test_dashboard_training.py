"""Training loss per step reaches the chart with its parts: from the child's report through the event to the series."""

from __future__ import annotations

from typing import Any

from tests.server.svg import charts_in
from zeroloop.app import App
from zeroloop.control import series
from zeroloop.pipeline import child, jobs
from zeroloop.queue.jobs import Job, JobStatus, Requirements
from zeroloop.server import panels
from zeroloop.workload.protocol import Progress

KEY = "tic_tac_toe_2p"


def _job(job_id: int) -> Job:
    return Job(
        id=job_id, type=jobs.TRAIN, config_key=KEY, payload={"iteration": 4, "window_sha256": "c" * 64},
        priority=0, requires=Requirements(), target_node=None, idempotency_key=None, status=JobStatus.RUNNING,
        attempts=1, max_attempts=3, timeout_s=600.0, run_after=0.0, lease_node="n1", lease_token=1, waiting_on=0,
        has_dependents=False, lease_expires_at=None, claimed_at=0.0, result=None, error=None, created_at=0.0,
        updated_at=0.0, finished_at=None,
    )  # fmt: skip


def _publish(app: App, event_type: str, payload: dict[str, Any]) -> None:
    app.bus.publish(event_type, {"config_key": KEY, **payload})


def test_the_childs_report_keeps_the_loss_parts_and_the_event_carries_them_to_the_chart(app: App) -> None:
    report = child.progress_report(
        Progress(step=100, total_steps=300, loss=1.25, policy_loss=1.0, value_loss=0.25, samples_per_s=9)
    )
    assert (report["policy_loss"], report["value_loss"]) == (1.0, 0.25)
    progress = jobs.lookup(jobs.TRAIN).progress
    assert progress is not None
    event_type, payload, _dedup = progress.build(_job(7), jobs.Progress(_job(7), report))
    _publish(app, "TRAINING_STARTED", {"job_id": 7, "iteration": 4, "node": "n1"})
    _publish(app, event_type, payload)  # the catalogue takes the parts
    _publish(app, event_type, {**payload, "step": 200, "loss": 1.0, "policy_loss": 0.8, "value_loss": 0.2})
    _publish(app, event_type, {**payload, "step": 200, "loss": 0.9, "policy_loss": 0.7, "value_loss": 0.2})  # resumed
    _publish(app, "TRAINING_COMPLETED", {"job_id": 7, "model_id": "m", "artifact_sha256": "d" * 64, "loss": 0.9,
                                         "samples": 10})  # fmt: skip
    _publish(app, event_type, {**payload, "step": 250, "loss": 5.0})  # forwarded after the end: not drawn
    _publish(app, "TRAINING_STARTED", {"job_id": 8, "iteration": 5, "node": "n1"})
    _publish(app, event_type, {"job_id": 8, "step": 50, "loss": 2.0, "samples_per_s": 9.0})  # a report without parts
    runs = series.training_runs(app, KEY)
    assert [(run["job_id"], run["iteration"], run["finished"]) for run in runs] == [(7, 4, True), (8, 5, False)]
    assert runs[0]["points"] == [
        {"step": 100, "loss": 1.25, "policy_loss": 1.0, "value_loss": 0.25},
        {"step": 200, "loss": 0.9, "policy_loss": 0.7, "value_loss": 0.2},
    ]
    drawn = {name: charts_in(svg)[name] for name, svg in panels.training({"training_runs": runs}, KEY).items()}
    assert drawn["training_loss"].series == {"round 4": [[100.0, 1.25], [200.0, 0.9]], "round 5": [[50.0, 2.0]]}
    assert drawn["loss_parts"].series == {"loss": [[50.0, 2.0]]}  # the newest run reports no parts
    assert "this run reports no parts" in " ".join(drawn["loss_parts"].texts)
    older = {name: charts_in(svg)[name] for name, svg in panels.training({"training_runs": runs[:1]}, KEY).items()}
    assert older["loss_parts"].series == {
        "loss": [[100.0, 1.25], [200.0, 0.9]],
        "policy_loss": [[100.0, 1.0], [200.0, 0.7]],
        "value_loss": [[100.0, 0.25], [200.0, 0.2]],
    }
