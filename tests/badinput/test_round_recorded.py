"""One whole round of the loop in this process, so the wiring recording sees the pipeline's real events.

Every daemon of the CLI's registry is built (which subscribes every production consumer),
then one round runs with the built-in AlphaZero workload at toy size: selfplay, export,
training (with progress), evaluation and the promotion decision, fed through the real
coordinator and progress consumers. A health pause and resume is applied once. The
session's wiring recording (tests/conftest.py) thereby holds what the pipeline really
publishes and consumes; tests/badinput/test_wiring_recorded.py compares it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa

from zeroloop.app import App
from zeroloop.bootstrap import start_pipeline
from zeroloop.cli.run import table_for_cli
from zeroloop.cluster.leases import LEADER
from zeroloop.config import ClusterSettings, PipelineSettings, Settings, WorkloadSettings
from zeroloop.daemons.daemon import DaemonContext, Leadership
from zeroloop.events.runner import ConsumerRunner
from zeroloop.pipeline.coordinator import PipelineCoordinator
from zeroloop.pipeline.daemons import SchedulerDaemon
from zeroloop.pipeline.executor import JobExecutor
from zeroloop.pipeline.progress import ProgressRecorder
from zeroloop.pipeline.scheduler import SelfplayScheduler
from zeroloop.store.schema import events

pytest.importorskip("torch")
pytest.importorskip("pyspiel")

CONFIG = "tic_tac_toe_2p"
TOY = {
    "blocks": 0, "channels": 4, "value_hidden": 4, "simulations": 2, "parallel_games": 2, "train_steps": 2,
    "train_batch_size": 8, "progress_every_steps": 1, "checkpoint_every_steps": 1, "eval_simulations": 2,
    "eval_parallel_games": 2, "baseline_simulations": 2, "temperature_moves": 9,
}  # fmt: skip
MAX_PASSES = 40  # a round takes about eight; the bound only stops a broken loop


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        # The test holds the leader lease for the whole round, however long a busy machine makes it.
        cluster=ClusterSettings(leader_lease_s=3600.0),
        workload=WorkloadSettings(torch_threads=1, overrides={CONFIG: TOY}),
        pipeline=PipelineSettings(
            train_after_samples=1,
            window_samples=200,
            eval_games=2,
            min_eval_games=1,
            baselines=["random"],
            baseline_games=2,
            selfplay_games_per_job=2,
            selfplay_queue_target=1,
        ),
    )


def _count(app: App, *types: str) -> int:
    with app.store.read() as conn:
        query = sa.select(sa.func.count()).select_from(events).where(events.c.type.in_(types))
        return int(conn.execute(query).scalar_one())


@pytest.mark.slow
def test_one_round_publishes_and_consumes_the_pipeline_events(settings: Settings, tmp_path: Path) -> None:
    with App(_settings(tmp_path)) as app:
        start_pipeline(app, CONFIG)
        # The scheduler's pause is a leader effect, fenced: this test process holds the lease.
        context = DaemonContext(app, leadership=Leadership(held=True, token=app.leases.acquire(LEADER)))
        for spec in table_for_cli().specs.values():
            spec.build(context)  # constructing a daemon subscribes its consumers; none is started
        coordinator = PipelineCoordinator(app.store, app.bus, app.queue, app.models, app.settings)
        runner = ConsumerRunner(app.bus, [coordinator.spec(), ProgressRecorder(app.store).spec()], app.settings.events)
        scheduler = SelfplayScheduler(app.store, app.queue, app.settings)
        executor = JobExecutor(app.models, app.bus, app.queue, app.artifacts, app.settings, node="w1")
        pauser = SchedulerDaemon(context)
        try:
            for _ in range(MAX_PASSES):
                if _count(app, "MODEL_PROMOTED", "MODEL_REJECTED"):
                    break
                scheduler.tick()
                asyncio.run(executor.run_once())
                asyncio.run(runner.run_until_idle())
            pauser.apply_pause(True)
            pauser.apply_pause(False)
            asyncio.run(runner.run_until_idle())
        finally:
            executor.close()
        assert _count(app, "MODEL_PROMOTED", "MODEL_REJECTED") == 1
        for event_type in ("NPZ_EXPORT_COMPLETE", "TRAINING_PROGRESS", "EVALUATION_RESULT", "PIPELINE_RESUMED"):
            assert _count(app, event_type) >= 1, event_type
