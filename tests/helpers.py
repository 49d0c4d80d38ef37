"""Test helpers shared across parts: a fake clock, an App over a store URL, running async tests."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

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


def make_app(store_url: str, tmp_path: Path, **overrides: object) -> App:
    """An App on `store_url` with a private data directory (the schema must already be current)."""
    settings = Settings(data_dir=tmp_path / "data", store=StoreSettings(url=store_url), **overrides)  # type: ignore[arg-type]
    return App(settings, upgrade=False)


def run_async(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test function in a fresh event loop (the project uses no async pytest plugin)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return wrapper
