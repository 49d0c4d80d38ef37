"""Fixtures for daemon tests: an App over each backend, and a fake clock whose sleep advances it."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from zeroloop.app import App
from zeroloop.config import Settings, StoreSettings


class FakeClock:
    """A clock (epoch seconds) that moves only when told; `sleep` advances it and yields once."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_app(store_url: str, tmp_path: Path, **overrides: object) -> App:
    settings = Settings(data_dir=tmp_path / "data", store=StoreSettings(url=store_url), **overrides)  # type: ignore[arg-type]
    return App(settings, upgrade=False)


@pytest.fixture
def app(store_url: str, tmp_path: Path, settings: Settings) -> Iterator[App]:
    """An App on the backend under test (the `settings` fixture keeps the environment out)."""
    with make_app(store_url, tmp_path) as opened:
        yield opened


def run_async(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test function in a fresh event loop (the project uses no async pytest plugin)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return wrapper
