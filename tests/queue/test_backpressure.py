"""Backpressure levels on constructed inputs, the STOP refusal, and one event per change."""

from __future__ import annotations

from typing import Any

import pytest

from tests.queue.conftest import FakeResources, event_log
from zeroloop.config import QueueSettings
from zeroloop.errors import BackpressureRefused
from zeroloop.events.bus import EventBus
from zeroloop.queue.backpressure import BackpressureLevel as L
from zeroloop.queue.backpressure import BackpressureMonitor, Resources, compute_level, level_for
from zeroloop.queue.manager import JobQueue
from zeroloop.store.database import Store

SETTINGS = QueueSettings(soft_limit=100, hard_limit=600)
IDLE = Resources(memory_pct=10.0, disk_pct=10.0)


def test_levels_are_ordered() -> None:
    assert [level.name for level in sorted(L)] == [
        "NONE", "LOW", "SOFT", "MEDIUM", "HARD", "HIGH", "CRITICAL", "STOP"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("depth", "level"),
    [(0, L.NONE), (49, L.NONE), (50, L.LOW), (99, L.LOW), (100, L.SOFT), (199, L.SOFT), (200, L.MEDIUM),
     (300, L.HARD), (400, L.HIGH), (500, L.CRITICAL), (599, L.CRITICAL), (600, L.STOP), (10_000, L.STOP)],
)  # fmt: skip
def test_depth_levels(depth: int, level: L) -> None:
    assert compute_level(depth, IDLE, SETTINGS) is level


@pytest.mark.parametrize(
    ("memory", "disk", "level"),
    [(79.9, 10, L.NONE), (80, 10, L.SOFT), (83, 10, L.MEDIUM), (94.9, 10, L.CRITICAL), (95, 10, L.STOP),
     (10, 85, L.SOFT), (10, 97, L.STOP), (90, 96, L.CRITICAL)],
)  # fmt: skip
def test_resource_levels(memory: float, disk: float, level: L) -> None:
    assert compute_level(0, Resources(memory_pct=memory, disk_pct=disk), SETTINGS) is level


def test_worst_reading_wins_and_degenerate_band() -> None:
    assert compute_level(300, Resources(memory_pct=95.0, disk_pct=0.0), SETTINGS) is L.STOP
    assert level_for(5, 5, 5) is L.STOP
    assert level_for(4.9, 4.9, 5) is L.SOFT


def test_enqueue_at_stop_is_refused_and_nothing_stored(make_queue: Any, resources: FakeResources) -> None:
    queue: JobQueue = make_queue(soft_limit=2, hard_limit=4)
    for _ in range(4):
        queue.enqueue("selfplay", "c")
    with pytest.raises(BackpressureRefused, match="'selfplay' is at backpressure STOP"):
        queue.enqueue("selfplay", "c")
    queue.enqueue("train", "c")  # other types are not affected by depth
    resources.memory_pct = 99.0
    with pytest.raises(BackpressureRefused):
        queue.enqueue("train", "c")
    assert queue.stats() == {"selfplay": {"queued": 4}, "train": {"queued": 1}}


def test_change_is_published_once_across_monitors(
    make_queue: Any, store: Store, resources: FakeResources, clock: Any
) -> None:
    queue: JobQueue = make_queue(soft_limit=2, hard_limit=12)
    other = BackpressureMonitor(
        store, EventBus(store, node="other", source="other"), queue.settings, resources=resources, clock=clock
    )
    assert queue.check_backpressure("selfplay") is L.NONE
    assert event_log(store, "BACKPRESSURE_CHANGED") == []
    queue.enqueue("selfplay", "c")  # depth 0 at check time: still NONE
    queue.enqueue("selfplay", "c")  # depth 1 = soft/2: LOW, published by this enqueue's check
    for monitor_check in (queue.check_backpressure, other.check, queue.check_backpressure):
        assert monitor_check("selfplay") is L.SOFT  # depth 2
    resources.memory_pct = 96.0
    assert other.check("selfplay") is L.STOP
    assert queue.backpressure.recorded("selfplay") is L.STOP
    changes = [(p["previous"], p["level"], p["depth"]) for _, p in event_log(store, "BACKPRESSURE_CHANGED")]
    assert changes == [("NONE", "LOW", 1), ("LOW", "SOFT", 2), ("SOFT", "STOP", 2)]
