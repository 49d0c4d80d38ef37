"""Fixtures of the bad-input tests: a queue and a bus on each backend with a fake clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import FakeClock
from tests.queue.conftest import queue_settings
from zeroloop.events.bus import EventBus
from zeroloop.queue.manager import JobQueue
from zeroloop.store.database import Store


@pytest.fixture
def bus(store: Store, clock: FakeClock) -> EventBus:
    """A bus on the test store with a small payload limit (4 KiB)."""
    return EventBus(store, node="n1", source="test", clock=clock, max_payload_bytes=4096)


@pytest.fixture
def queue(store: Store, clock: FakeClock, tmp_path: Path) -> JobQueue:
    """A queue on the test store: 10 s leases, a 4 KiB payload and result limit."""
    bus = EventBus(store, node="n1", source="test", clock=clock)
    settings = queue_settings(tmp_path, max_payload_bytes=4096)
    return JobQueue(store, bus, settings, clock=clock)
