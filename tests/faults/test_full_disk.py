"""A full disk on a worker: the job fails with a reason naming the node and the path, and the loop resumes.

The worker's data directory is a 2 MiB tmpfs. The user's selfplay command writes its
output and then fills the disk (once), so storing the output fails with ENOSPC inside the
executor: the artifact location and the node's held directory share the full disk. The
executor must survive, fail the job (retryable) saying where, hold its node back from
selfplay by the node's own reading (the cluster's backpressure is left alone), and
complete the job once space returns.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from zeroloop.app import App
from zeroloop.config import QueueSettings, Settings, StoreSettings, WorkloadSettings
from zeroloop.pipeline import jobs
from zeroloop.pipeline.executor import JobExecutor
from zeroloop.queue.backpressure import BackpressureLevel, NodePressure, psutil_reader
from zeroloop.queue.jobs import JobStatus

SELFPLAY_THEN_FILL = """
import os, sys, numpy as np
out, games, filler, once = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
np.savez(out, num_games=np.asarray(games), obs=np.zeros((games * 5, 3)))
if not os.path.exists(once):
    open(once, "w").close()
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(bytes(65536))
        except OSError:
            pass
"""


def test_a_full_disk_fails_the_job_saying_where_and_the_loop_resumes(
    store_url: str, tmp_path: Path, small_disk: Path, settings: Settings
) -> None:
    script = tmp_path / "selfplay.py"
    script.write_text(SELFPLAY_THEN_FILL)
    filler, once = small_disk / "filler", tmp_path / "filled-once"
    commands = tmp_path / "commands.toml"
    commands.write_text(f'[selfplay]\ncommand = "{sys.executable} {script} {{output}} {{games}} {filler} {once}"\n')
    worker = Settings(
        data_dir=small_disk / "data",
        store=StoreSettings(url=store_url),
        workload=WorkloadSettings(kind="command", command_file=commands),
        queue=QueueSettings(retry_initial_s=0.0),
    )
    with App(worker, upgrade=False) as app:
        job = app.queue.enqueue(jobs.SELFPLAY, "tic_tac_toe_2p", {"games": 2})
        # The node's own readings of its data disk, as the executor daemon builds them.
        pressure = NodePressure(
            app.settings.queue, psutil_reader(app.settings.data_dir), producers=frozenset({jobs.SELFPLAY}), max_age_s=0
        )
        executor = JobExecutor(
            app.models, app.bus, app.queue, app.artifacts, app.settings, node="w1", pressure=pressure
        )
        try:
            assert asyncio.run(executor.run_once())  # survives the full disk
            failed = app.queue.get(job.id)
            assert failed.status is JobStatus.QUEUED and failed.attempts == 1
            assert failed.error is not None
            assert failed.error.startswith("node w1: artifact ")
            assert "refused it (No space left on device)" in failed.error  # the artifact location's disk
            assert f"holding it on node {app.artifacts.node} at {small_disk}" in failed.error  # and this node's
            assert "the disk is full" in failed.error
            assert executor.jobs_failed == 1
            assert pressure.level() is BackpressureLevel.STOP  # the node holds itself back...
            assert not asyncio.run(executor.run_once())  # ...claiming no selfplay while its disk is full
            assert app.queue.check_backpressure(jobs.SELFPLAY) is BackpressureLevel.NONE  # others are not held back

            filler.unlink()  # space returns
            assert pressure.level() < BackpressureLevel.STOP
            assert asyncio.run(executor.run_once())
            assert app.queue.get(job.id).status is JobStatus.COMPLETED
        finally:
            executor.close()
