"""Shared helpers for the event bus tests: fast settings, a bus on the store under test, a no-wait sleep."""

from __future__ import annotations

import pytest

from tests.helpers import FakeClock
from zeroloop.config import EventSettings
from zeroloop.events.bus import EventBus
from zeroloop.store.database import Store


async def no_sleep(_seconds: float) -> None:
    """Backoff without waiting: tests count attempts, not time."""


@pytest.fixture
def event_settings() -> EventSettings:
    """Settings that retry at once and dead-letter after 3 attempts."""
    return EventSettings(retry_initial_s=0.0, retry_max_s=0.0, max_attempts=3, poll_interval_s=0.01, batch_size=50)


@pytest.fixture
def bus(store: Store, clock: FakeClock) -> EventBus:
    """A bus on the store under test."""
    return EventBus(store, node="n1", source="test", clock=clock)


def node_lost(node: str = "a", silent_s: float = 1.0) -> dict[str, object]:
    """A valid NODE_LOST payload."""
    return {"node": node, "silent_s": silent_s}
