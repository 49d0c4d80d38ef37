"""Fixtures of the operations tests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import FakeClock
from zeroloop.app import App
from zeroloop.config import Settings, StoreSettings
from zeroloop.store.queries import pipelines as pipeline_queries

CONFIG = "tic_tac_toe_2p"


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock at the real time, so files written now have sensible ages against it."""
    return FakeClock(time.time())


@contextmanager
def pipeline_app(store_url: str, tmp_path: Path, clock: FakeClock, **sections: Any) -> Iterator[App]:
    """An App with the settings `sections`, on `clock`, and CONFIG's pipeline."""
    settings = Settings(data_dir=tmp_path / "data", store=StoreSettings(url=store_url), **sections)
    with App(settings, upgrade=False, clock=clock) as opened:
        with opened.store.transaction() as conn:
            pipeline_queries.ensure_pipeline(conn, CONFIG, clock())
        yield opened
