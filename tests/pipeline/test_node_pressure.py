"""A node past its own disk or memory hard limit claims no selfplay itself; the cluster's level is left alone."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tests.queue.conftest import FakeResources
from zeroloop.app import App
from zeroloop.config import Settings, StoreSettings, WorkloadSettings
from zeroloop.pipeline import jobs
from zeroloop.pipeline.executor import JobExecutor
from zeroloop.queue.backpressure import BackpressureLevel, NodePressure
from zeroloop.queue.jobs import JobStatus

SELFPLAY = """
import sys, numpy as np
np.savez(sys.argv[1], num_games=np.asarray(1), obs=np.zeros((5, 3)))
"""


def test_a_full_node_leaves_selfplay_to_others_and_takes_it_again_once_it_has_room(
    store_url: str, tmp_path: Path, settings: Settings
) -> None:
    code = tmp_path / "selfplay.py"
    code.write_text(SELFPLAY)
    commands = tmp_path / "commands.toml"
    commands.write_text(f'[selfplay]\ncommand = "{sys.executable} {code} {{output}}"\n')
    loaded = Settings(
        data_dir=tmp_path / "data",
        store=StoreSettings(url=store_url),
        workload=WorkloadSettings(kind="command", command_file=commands),
    )
    with App(loaded, upgrade=False) as app:
        reading = FakeResources(disk_pct=98.0)
        pressure = NodePressure(app.settings.queue, reading, producers=frozenset({jobs.SELFPLAY}), max_age_s=0.0)
        executor = JobExecutor(
            app.models, app.bus, app.queue, app.artifacts, app.settings, node="w1", pressure=pressure
        )
        job = app.queue.enqueue(jobs.SELFPLAY, "ringrift_2p", {"games": 1})
        try:
            assert not asyncio.run(executor.run_once())  # full: nothing claimed
            assert app.queue.get(job.id).status is JobStatus.QUEUED
            assert app.queue.check_backpressure(jobs.SELFPLAY) is BackpressureLevel.NONE  # nobody else held back
            reading.disk_pct = 50.0
            assert asyncio.run(executor.run_once())
        finally:
            executor.close()
        assert app.queue.get(job.id).status is JobStatus.COMPLETED
