"""Backpressure levels on constructed inputs, the STOP refusal, and one event per change."""

from __future__ import annotations

from typing import Any

import pytest

from tests.queue.conftest import FakeResources, event_log
from zeroloop.config import QueueSettings
from zeroloop.errors import BackpressureRefused
from zeroloop.events.bus import EventBus
from zeroloop.queue.backpressure import BackpressureLevel as L
from zeroloop.queue.backpressure import (
    BackpressureMonitor,
    NodePressure,
    Resources,
    compute_level,
    level_for,
    resource_level,
)
from zeroloop.queue.manager import JobQueue
from zeroloop.store.database import Store

SETTINGS = QueueSettings(soft_limit=100, hard_limit=600)


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
    assert compute_level(depth, SETTINGS) is level


@pytest.mark.parametrize(
    ("memory", "disk", "level"),
    [(79.9, 10, L.NONE), (80, 10, L.SOFT), (83, 10, L.MEDIUM), (94.9, 10, L.CRITICAL), (95, 10, L.STOP),
     (10, 85, L.SOFT), (10, 97, L.STOP), (90, 96, L.CRITICAL)],
)  # fmt: skip
def test_a_nodes_resource_levels(memory: float, disk: float, level: L) -> None:
    assert resource_level(Resources(memory_pct=memory, disk_pct=disk), SETTINGS) is level


def test_degenerate_band() -> None:
    assert level_for(5, 5, 5) is L.STOP
    assert level_for(4.9, 4.9, 5) is L.SOFT


def test_a_node_past_a_hard_limit_claims_no_selfplay_until_it_is_back_below_the_soft_one() -> None:
    reading = FakeResources(disk_pct=96.0)
    node = NodePressure(SETTINGS, reading, producers=frozenset({"selfplay"}), max_age_s=0.0)
    types = ("selfplay", "export", "train")
    assert node.level() is L.CRITICAL and node.claimable(types) == types
    reading.disk_pct = 97.0
    assert node.level() is L.STOP and node.claimable(types) == ("export", "train")
    reading.disk_pct = 96.9  # hovering at the hard limit: no flapping between claiming and refusing
    assert node.level() is L.STOP and node.claimable(types) == ("export", "train")
    reading.disk_pct = 86.0
    assert node.level() is L.STOP
    reading.disk_pct = 84.0  # below the soft limit: it takes selfplay again
    assert node.level() is L.NONE and node.claimable(types) == types
    reading.memory_pct = 95.0  # memory counts the same way
    assert node.claimable(types) == ("export", "train")


def test_node_readings_are_read_at_most_every_max_age_s() -> None:
    reading = FakeResources(disk_pct=10.0)
    calls = []
    ticks = iter([0.0, 1.0, 6.0])

    def read() -> Resources:
        calls.append(1)
        return reading()

    node = NodePressure(SETTINGS, read, producers=frozenset({"selfplay"}), max_age_s=5.0, clock=lambda: next(ticks))
    node.level()
    node.level()
    node.level()
    assert len(calls) == 2


def test_enqueue_at_stop_is_refused_and_nothing_stored(make_queue: Any) -> None:
    queue: JobQueue = make_queue(soft_limit=2, hard_limit=4)
    for _ in range(4):
        queue.enqueue("selfplay", "c")
    with pytest.raises(BackpressureRefused, match="'selfplay' is at backpressure STOP"):
        queue.enqueue("selfplay", "c")
    queue.enqueue("train", "c")  # other types are not affected by depth
    assert queue.stats() == {"selfplay": {"queued": 4}, "train": {"queued": 1}}


def test_change_is_published_once_across_monitors(make_queue: Any, store: Store, clock: Any) -> None:
    queue: JobQueue = make_queue(soft_limit=2, hard_limit=3)
    other = BackpressureMonitor(store, EventBus(store, node="other", source="other"), queue.settings, clock=clock)
    assert queue.check_backpressure("selfplay") is L.NONE
    assert event_log(store, "BACKPRESSURE_CHANGED") == []
    queue.enqueue("selfplay", "c")  # depth 0 at check time: still NONE
    queue.enqueue("selfplay", "c")  # depth 1 = soft/2: LOW, published by this enqueue's check
    for monitor_check in (queue.check_backpressure, other.check, queue.check_backpressure):
        assert monitor_check("selfplay") is L.SOFT  # depth 2
    queue.enqueue("selfplay", "c")
    assert other.check("selfplay") is L.STOP
    assert queue.backpressure.recorded("selfplay") is L.STOP
    changes = [(p["previous"], p["level"], p["depth"]) for _, p in event_log(store, "BACKPRESSURE_CHANGED")]
    assert changes == [("NONE", "LOW", 1), ("LOW", "SOFT", 2), ("SOFT", "STOP", 3)]


def test_a_workers_full_disk_and_the_coordinators_checks_never_make_the_level_flap(
    make_queue: Any, store: Store
) -> None:
    # They used to share one last-writer-wins row: the worker's disk wrote STOP, the coordinator's
    # quiet disk wrote NONE back, and every check announced a change.
    queue: JobQueue = make_queue(soft_limit=10, hard_limit=20)
    worker = NodePressure(queue.settings, FakeResources(disk_pct=99.0), producers=frozenset({"selfplay"}))
    for _ in range(5):
        assert worker.claimable(("selfplay",)) == ()  # the worker holds itself back
        assert queue.check_backpressure("selfplay") is L.NONE  # the cluster's level: its queue is empty
    assert event_log(store, "BACKPRESSURE_CHANGED") == []
