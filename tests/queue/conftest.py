"""Fixtures of the queue tests: a queue on each backend with an injected clock and resource reading."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.helpers import FakeClock
from zeroloop.config import QueueSettings, Settings
from zeroloop.events.bus import EventBus
from zeroloop.queue.backpressure import Resources
from zeroloop.queue.manager import JobQueue
from zeroloop.store.database import Store
from zeroloop.store.schema import events

T0 = 1_000_000.0


@dataclass
class FakeResources:
    """A settable resource reading (percent used)."""

    memory_pct: float = 10.0
    disk_pct: float = 10.0

    def __call__(self) -> Resources:
        return Resources(memory_pct=self.memory_pct, disk_pct=self.disk_pct)


def queue_settings(tmp_path: Path, **queue: Any) -> Settings:
    """Settings for queue tests: short leases and backoff, small limits."""
    values: dict[str, Any] = {
        "lease_s": 10.0,
        "retry_initial_s": 1.0,
        "retry_max_s": 8.0,
        "soft_limit": 10,
        "hard_limit": 20,
        "default_max_attempts": 3,
    }
    values.update(queue)
    return Settings(data_dir=tmp_path / "data", queue=QueueSettings(**values))


@pytest.fixture
def resources() -> FakeResources:
    return FakeResources()


@pytest.fixture
def make_queue(store: Store, clock: FakeClock, tmp_path: Path) -> Iterator[Any]:
    """Build a JobQueue on the test store with queue settings overridden as given."""

    def make(**queue: Any) -> JobQueue:
        bus = EventBus(store, node="test-node", source="test", clock=clock)
        return JobQueue(store, bus, queue_settings(tmp_path, **queue), clock=clock)

    yield make


@pytest.fixture
def queue(make_queue: Any) -> JobQueue:
    return make_queue()  # type: ignore[no-any-return]


def event_log(store: Store, *types: str) -> list[tuple[str, dict[str, Any]]]:
    """(type, payload) of every stored event, oldest first, optionally only of `types`."""
    stmt = sa.select(events.c.type, events.c.payload).order_by(events.c.id)
    if types:
        stmt = stmt.where(events.c.type.in_(types))
    with store.read() as conn:
        return [(str(t), dict(p)) for t, p in conn.execute(stmt)]
