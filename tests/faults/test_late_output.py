"""A partitioned worker's late batch is never trained on: only the current lease holder's output enters a window.

Worker a claims a selfplay job and its command starts (and waits on a gate file); a is cut
off from the store, so its heartbeats fail. Its lease expires and the job is re-run and
completed by worker b. Then a's command finishes, and a uploads its batch (recorded, as
every upload is before its job completes), but its completion is refused. That late batch must enter no
training window, no consolidated shard, and goes at the next garbage collection, while the
batches of accepted attempts stay. On SQLite and PostgreSQL, with real executors and commands.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any, cast

from tests.helpers import run_async
from zeroloop.app import App
from zeroloop.artifacts.transfer import ArtifactKind
from zeroloop.config import (
    ArtifactSettings,
    MaintenanceSettings,
    PipelineSettings,
    QueueSettings,
    Settings,
    StoreSettings,
    WorkloadSettings,
)
from zeroloop.errors import StoreUnavailable
from zeroloop.events.runner import ConsumerRunner
from zeroloop.ops.consolidate import Consolidator
from zeroloop.ops.gc import GarbageCollector
from zeroloop.pipeline import jobs
from zeroloop.pipeline.coordinator import PipelineCoordinator
from zeroloop.pipeline.executor import JobExecutor
from zeroloop.queue.jobs import Job, JobStatus
from zeroloop.queue.manager import JobQueue
from zeroloop.store.queries import artifacts as artifact_queries
from zeroloop.store.queries import pipelines as pipeline_queries

CONFIG = "tic_tac_toe_2p"
LEASE_S = 1.0  # worker a's leases: short, so the partitioned worker's lease runs out quickly (seconds)
LONG_LEASE_S = 600.0  # everyone else's: no missed heartbeat on a loaded machine costs a lease (seconds)
WAIT_S = 120.0  # longest wait for a command to reach its gate (seconds), on a loaded machine
POLL_S = 0.05

# The first run (worker a's) marks that it started and waits at the gate; later runs go straight
# through. Every run writes different games (an unseeded generator), so batches never coincide.
SELFPLAY = """
import os, sys, time, numpy as np
out, games, gate = sys.argv[1], int(sys.argv[2]), sys.argv[3]
started, release = gate + ".started", gate + ".release"
if not os.path.exists(started):
    open(started, "w").close()
    for _ in range(6000):
        if os.path.exists(release):
            break
        time.sleep(0.05)
np.savez(out, num_games=np.asarray(games), obs=np.random.default_rng().random((games * 5, 3)))
"""


def _settings(store_url: str, tmp_path: Path, node: str, lease_s: float) -> Settings:
    """Worker `node`'s settings: its own data directory, the shared store and artifact location."""
    script = tmp_path / "selfplay.py"
    script.write_text(SELFPLAY)
    commands = tmp_path / "commands.toml"
    gate = tmp_path / "gate"
    commands.write_text(f'[selfplay]\ncommand = "{sys.executable} {script} {{output}} {{games}} {gate}"\n')
    return Settings(
        data_dir=tmp_path / node,
        store=StoreSettings(url=store_url),
        artifacts=ArtifactSettings(url=(tmp_path / "artifacts").as_uri()),
        workload=WorkloadSettings(kind="command", command_file=commands),
        queue=QueueSettings(lease_s=lease_s, reaper_interval_s=min(lease_s, 5.0), retry_initial_s=0.0),
        pipeline=PipelineSettings(train_after_samples=1, window_samples=10_000),
        maintenance=MaintenanceSettings(consolidate_after_s=0.0, shard_target_bytes=10**8),
    )


async def _until(condition: object, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(POLL_S)


class _CutOff:
    """Worker a's view of the queue while it is partitioned: its heartbeats cannot reach the store."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue

    def heartbeat(self, job_id: int, token: int) -> float:
        raise StoreUnavailable("the network between worker a and the store is down")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.queue, name)


def _batches(app: App) -> dict[str, int | None]:
    with app.store.read() as conn:
        rows = artifact_queries.list_artifacts(conn, config_key=CONFIG, kind="game_batch")
    return {row["sha256"]: row["producer_job_id"] for row in rows}


@run_async
async def test_a_deposed_holders_late_batch_enters_no_window_and_goes_at_gc(
    store_url: str, tmp_path: Path, settings: Settings
) -> None:
    with (
        App(_settings(store_url, tmp_path, "a", LEASE_S), upgrade=False) as app_a,
        App(_settings(store_url, tmp_path, "b", LONG_LEASE_S), upgrade=False) as app,
    ):
        with app.store.transaction() as conn:
            pipeline_queries.ensure_pipeline(conn, CONFIG, time.time())
        job = app.queue.enqueue(jobs.SELFPLAY, CONFIG, {"games": 3})
        cut_off = cast(JobQueue, _CutOff(app_a.queue))
        worker_a = JobExecutor(app_a.models, app_a.bus, cut_off, app_a.artifacts, app_a.settings, node="a")
        worker_b = JobExecutor(app.models, app.bus, app.queue, app.artifacts, app.settings, node="b")
        try:
            run_a = asyncio.create_task(worker_a.run_once())
            await _until((tmp_path / "gate.started").exists, "worker a's command to start")
            # Worker a is cut off: its lease runs out and the reaper re-queues the job for worker b.
            reaped: list[Job] = []
            await _until(lambda: reaped.extend(app.queue.reap()) or reaped, "worker a's lease to run out")
            assert [job.id for job in reaped] == [job.id] and reaped[0].status is JobStatus.QUEUED
            assert await worker_b.run_once()
            accepted = app.queue.get(job.id)
            assert accepted.status is JobStatus.COMPLETED
            (tmp_path / "gate.release").touch()  # a's command finishes: a uploads its batch, then its completion
            assert await asyncio.wait_for(run_a, timeout=WAIT_S)
            other = app.queue.enqueue(jobs.SELFPLAY, CONFIG, {"games": 2})
            assert await worker_b.run_once()
        finally:
            worker_a.close()
            worker_b.close()
        good = accepted.result["artifact_sha256"]
        second = app.queue.get(other.id).result["artifact_sha256"]
        late = next(sha for sha, producer in _batches(app).items() if producer == job.id and sha != good)
        assert app.queue.get(job.id).result["artifact_sha256"] == good  # a's completion was refused

        coordinator = PipelineCoordinator(app.store, app.bus, app.queue, app.models, app.settings)
        await ConsumerRunner(app.bus, [coordinator.spec()], app.settings.events).run_until_idle()
        (export,) = app.queue.list(job_type=jobs.EXPORT)
        assert sorted(export.payload["inputs"]) == sorted([good, second])  # never the late batch
        assert [sorted(row["sha256"] for row in group) for group in Consolidator(
            app.store, app.artifacts, app.settings).groups(CONFIG)] == [sorted([good, second])]  # fmt: skip

        report = GarbageCollector(app.store, app.bus, app.artifacts, app.settings).collect()
        assert list(report.late_outputs) == [late]
        assert report.late_outputs[late] == f"late output of job {job.id}, which accepted {good[:12]} instead"
        assert set(_batches(app)) == {good, second}
        assert not Path(app.artifacts.location(ArtifactKind.GAME_BATCH, late).removeprefix("file://")).exists()
