"""The job executor with a user's own commands as the workload: claim, run in the child, upload, complete.

The upload runs against a local directory and against a real S3 API on loopback (moto).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.s3 import Location
from zeroloop.app import App
from zeroloop.artifacts.transfer import ArtifactKind
from zeroloop.config import ArtifactSettings, Settings, StoreSettings, WorkloadSettings
from zeroloop.pipeline import jobs
from zeroloop.pipeline.executor import JobExecutor
from zeroloop.queue.jobs import JobStatus
from zeroloop.store.queries import artifacts as artifact_queries
from zeroloop.store.schema import events

SELFPLAY = """
import sys, numpy as np
out, games = sys.argv[1], int(sys.argv[2])
np.savez(out, num_games=np.asarray(games), obs=np.zeros((games * 5, 3)))
"""
BROKEN = """
import sys
print("engine crashed", file=sys.stderr)
sys.exit(3)
"""


def _app(store_url: str, tmp_path: Path, script: str, artifacts: ArtifactSettings | None = None) -> App:
    code = tmp_path / "selfplay.py"
    code.write_text(script)
    commands = tmp_path / "commands.toml"
    commands.write_text(f'[selfplay]\ncommand = "{sys.executable} {code} {{output}} {{games}}"\n')
    settings = Settings(
        data_dir=tmp_path / "data",
        store=StoreSettings(url=store_url),
        workload=WorkloadSettings(kind="command", command_file=commands),
        artifacts=artifacts or ArtifactSettings(),
    )
    return App(settings, upgrade=False)


def _executor(app: App) -> JobExecutor:
    return JobExecutor(app.models, app.bus, app.queue, app.artifacts, app.settings, node="w1")


@pytest.mark.parametrize("location", ["local", "s3"])
def test_a_command_selfplay_job_is_uploaded_then_completed_and_announced(
    store_url: str, tmp_path: Path, settings: Settings, location: str, request: pytest.FixtureRequest
) -> None:
    artifacts = None
    if location == "s3":  # a real S3 API on loopback (moto), reached through artifacts.storage_options
        bucket: Location = request.getfixturevalue("s3_location")
        artifacts = ArtifactSettings(url=bucket.url, storage_options=bucket.storage_options)
    with _app(store_url, tmp_path, SELFPLAY, artifacts) as app:
        job = app.queue.enqueue(jobs.SELFPLAY, "ringrift_2p", {"games": 4})
        executor = _executor(app)
        try:
            assert asyncio.run(executor.run_once())
            assert not asyncio.run(executor.run_once())
        finally:
            executor.close()
        done = app.queue.get(job.id)
        assert done.status is JobStatus.COMPLETED
        sha = done.result["artifact_sha256"]
        with app.store.read() as conn:
            artifact = artifact_queries.get_artifact(conn, sha)
            announced = conn.execute(
                sa.select(events.c.payload).where(events.c.type == "SELFPLAY_COMPLETE")
            ).scalar_one()
        assert artifact is not None and artifact["producer_job_id"] == job.id
        assert announced == {
            "config_key": "ringrift_2p",
            "job_id": job.id,
            "artifact_sha256": sha,
            "games": 4,
            "samples": 20,
            "model_id": None,
        }
        app.artifacts.cache.remove(sha)  # fetched from the shared location, not this node's cache
        assert app.artifacts.fetch(sha).stat().st_size == artifact["size_bytes"]
        shared = app.artifacts.location(ArtifactKind.GAME_BATCH, sha)
        assert shared.startswith("s3://" if location == "s3" else "file://")
        with app.store.read() as conn:  # the manifest names the shared copy relative to the location
            (copy,) = artifact_queries.copies_of(conn, sha)
        assert not copy["location"].startswith(("s3://", "file://"))
        assert app.artifacts.resolve(copy["location"]) == shared


def test_a_failing_command_fails_the_attempt_with_its_output(
    store_url: str, tmp_path: Path, settings: Settings
) -> None:
    with _app(store_url, tmp_path, BROKEN) as app:
        job = app.queue.enqueue(jobs.SELFPLAY, "ringrift_2p", {"games": 4}, max_attempts=1)
        executor = _executor(app)
        try:
            assert asyncio.run(executor.run_once())
        finally:
            executor.close()
        dead = app.queue.get(job.id)
        assert dead.status is JobStatus.DEAD
        assert dead.error is not None and "exited with status 3" in dead.error and "engine crashed" in dead.error


def test_run_reports_a_job_and_leases_the_next_in_one_transaction(
    store_url: str, tmp_path: Path, settings: Settings
) -> None:
    with _app(store_url, tmp_path, SELFPLAY) as app:
        first = app.queue.enqueue(jobs.SELFPLAY, "ringrift_2p", {"games": 2})
        second = app.queue.enqueue(jobs.SELFPLAY, "ringrift_2p", {"games": 3})
        executor = _executor(app)
        complete_and_claim = app.queue.complete_and_claim

        def then_stop(*args: Any, **kwargs: Any) -> Any:
            outcome = complete_and_claim(*args, **kwargs)
            executor.stop()  # the lease taken with this result must still be run
            return outcome

        app.queue.complete_and_claim = then_stop  # type: ignore[method-assign]
        asyncio.run(asyncio.wait_for(executor.run(idle_wait_s=0.05), timeout=120))
        assert [app.queue.get(job.id).status for job in (first, second)] == [JobStatus.COMPLETED] * 2
        assert executor.jobs_done == 2
        with app.store.read() as conn:
            log = conn.execute(sa.select(events.c.type, events.c.payload, events.c.txid).order_by(events.c.id)).all()
        kinds = [(kind, payload["job_id"]) for kind, payload, _txid in log if kind != "JOB_QUEUED"]
        if app.store.backend == "postgresql":  # SQLite records no transaction ids
            txids = [txid for kind, _payload, txid in log if kind != "JOB_QUEUED"]
            assert txids[1] == txids[2] == txids[3] != txids[4]
        assert kinds == [
            ("JOB_CLAIMED", first.id),
            ("SELFPLAY_COMPLETE", first.id),
            ("JOB_COMPLETED", first.id),
            ("JOB_CLAIMED", second.id),
            ("SELFPLAY_COMPLETE", second.id),
            ("JOB_COMPLETED", second.id),
        ]
