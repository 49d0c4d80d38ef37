"""An App on each store backend, with a fake clock and a small tic-tac-toe tune."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import FakeClock
from zeroloop.app import App
from zeroloop.config import Settings, StoreSettings, TuneSettings
from zeroloop.queue.jobs import Job

CONFIG = "tic_tac_toe_2p"
SPACE = {
    "learning_rate": {"low": 0.001, "high": 0.1, "log": True},
    "simulations": {"low": 4, "high": 16},
    "gumbel": {"choices": [False, True]},
    "blocks": {"choices": [1]},
    "channels": {"choices": [8, 16]},
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tuned(store_url: str, tmp_path: Path, settings: Settings, clock: FakeClock) -> Iterator[App]:
    """An App whose tunes have 3 variants of tiny tic-tac-toe networks, dropped ones not replaced."""
    settings = Settings(
        data_dir=tmp_path / "data",
        store=StoreSettings(url=store_url),
        tune=TuneSettings(variants=3, space=SPACE, replace_dropped=False, exploit_min_gap_elo=30.0),  # type: ignore[arg-type]
    )
    with App(settings, upgrade=False, clock=clock) as app:
        yield app


def finish_job(app: App, config_key: str, job_type: str, counts: dict[str, float], payload: Any = None) -> Job:
    """A job of `config_key` that a worker ran to completion, reporting `counts` (cpu_s, loss, ...)."""
    job = app.queue.enqueue(job_type, config_key, payload or {"games": 1})
    lease = app.queue.claim("w1", types=[job_type])
    assert lease is not None and lease.job.id == job.id
    return app.queue.complete(job.id, lease.token, {"artifact_sha256": "0" * 64, "counts": counts})


def kill_job(app: App, config_key: str, error: str = "boom", job_type: str = "selfplay") -> Job:
    """A job of `config_key` that died: its one attempt failed."""
    job = app.queue.enqueue(job_type, config_key, {"games": 1}, max_attempts=1)
    lease = app.queue.claim("w1", types=[job_type])
    assert lease is not None and lease.job.id == job.id
    return app.queue.fail(job.id, lease.token, error)
