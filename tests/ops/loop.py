"""A real pipeline driven in this process, step by step: tiny AlphaZero on tic-tac-toe, a few seconds a round."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zeroloop.app import App
from zeroloop.bootstrap import start_pipeline
from zeroloop.config import PipelineSettings, Settings, StoreSettings, WorkloadSettings
from zeroloop.events.runner import ConsumerRunner
from zeroloop.pipeline.coordinator import PipelineCoordinator
from zeroloop.pipeline.executor import JobExecutor
from zeroloop.pipeline.scheduler import SelfplayScheduler
from zeroloop.store.queries import pipelines as pipeline_queries

CONFIG = "tic_tac_toe_2p"
MAX_STEPS = 40  # bound on the steps of one drive: a round takes about six


def tiny_settings(data_dir: Path, store_url: str | None = None) -> Settings:
    """Settings that make one round (2 selfplay jobs, export, train, evaluate) take seconds."""
    workload = WorkloadSettings(
        overrides={},
        torch_threads=1,
        blocks=1,
        channels=8,
        value_hidden=8,
        simulations=6,
        parallel_games=8,
        train_batch_size=32,
        train_steps=6,
        checkpoint_every_steps=3,
        progress_every_steps=3,
        eval_simulations=4,
        eval_parallel_games=2,
        baseline_simulations=4,
    )
    pipeline = PipelineSettings(
        train_after_samples=60,
        window_samples=200,
        selfplay_games_per_job=8,
        selfplay_queue_target=1,
        eval_games=2,
        min_eval_games=2,
        baselines=["random"],
        baseline_games=2,
    )
    store = StoreSettings(url=store_url) if store_url else StoreSettings()
    return Settings(data_dir=data_dir, workload=workload, pipeline=pipeline, store=store)


class Loop:
    """The leader's coordinator and scheduler and one worker's executor over one App, stepped by hand."""

    def __init__(self, app: App) -> None:
        self.app = app
        coordinator = PipelineCoordinator(app.store, app.bus, app.queue, app.models, app.settings)
        self.runner = ConsumerRunner(app.bus, [coordinator.spec()], app.settings.events)
        self.scheduler = SelfplayScheduler(app.store, app.queue, app.settings)
        self.executor = JobExecutor(app.models, app.bus, app.queue, app.artifacts, app.settings, node="w1")

    def state(self) -> dict[str, Any]:
        """The pipeline's row."""
        with self.app.store.read() as conn:
            row = pipeline_queries.get_pipeline(conn, CONFIG)
        assert row is not None
        return dict(row)

    async def step(self) -> None:
        """Top up selfplay, run one job, let the coordinator react to what it announced."""
        self.scheduler.tick()
        await self.executor.run_once()
        await self.runner.run_until_idle()

    async def drive_until(self, done: Any) -> int:
        """Step until `done(state)` holds; return the steps taken (fails past MAX_STEPS)."""
        for steps in range(1, MAX_STEPS + 1):
            await self.step()
            if done(self.state()):
                return steps
        raise AssertionError(f"the pipeline did not get there in {MAX_STEPS} steps: {self.state()}")

    def close(self) -> None:
        """Stop the executor's child process."""
        self.executor.close()


def start(app: App) -> Loop:
    """Create the pipeline of CONFIG and a loop over `app`."""
    start_pipeline(app, CONFIG)
    return Loop(app)
