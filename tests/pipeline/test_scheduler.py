"""The selfplay scheduler: weights, allocation under backpressure, top-up across configs, the pause rule."""

from __future__ import annotations

import pytest

from tests.helpers import FakeClock
from zeroloop.config import Settings
from zeroloop.events.bus import EventBus
from zeroloop.pipeline import jobs
from zeroloop.pipeline.scheduler import ConfigNeed, SelfplayScheduler, allocate, weight
from zeroloop.queue.backpressure import BackpressureLevel
from zeroloop.queue.jobs import JobStatus
from zeroloop.queue.manager import JobQueue
from zeroloop.store.database import Store
from zeroloop.store.queries import pipelines as queries


def test_weight_grows_with_deficit_staleness_and_velocity() -> None:
    fed = ConfigNeed("a", samples_since_training=1000, since_last_batch_s=0.0, elo_gain_last_hour=0.0)
    starved = ConfigNeed("b", samples_since_training=0, since_last_batch_s=1200.0, elo_gain_last_hour=0.0)
    improving = ConfigNeed("c", samples_since_training=1000, since_last_batch_s=0.0, elo_gain_last_hour=250.0)
    assert weight(fed, 1000) == 1.0
    assert weight(starved, 1000) == 4.0
    assert weight(improving, 1000) == 2.0


def test_allocation_splits_by_weight_and_backs_off_under_pressure() -> None:
    weights = {"a": 1.0, "b": 3.0}
    assert allocate(weights, 8, BackpressureLevel.NONE) == {"a": 2, "b": 6}
    assert allocate(weights, 8, BackpressureLevel.SOFT) == {"a": 1, "b": 3}
    assert allocate(weights, 8, BackpressureLevel.HARD) == {"a": 0, "b": 0}
    assert allocate({"a": 1.0, "b": 1.0, "c": 1.0}, 2, BackpressureLevel.NONE) == {"a": 1, "b": 1, "c": 1}


@pytest.fixture
def scheduler(store: Store, settings: Settings) -> SelfplayScheduler:
    settings.pipeline.selfplay_queue_target = 6
    clock = FakeClock()
    bus = EventBus(store, node="n1", source="test", clock=clock)
    queue = JobQueue(store, bus, settings, clock=clock)
    with store.transaction() as conn:
        for key in ("connect_four_2p", "tic_tac_toe_2p"):
            queries.ensure_pipeline(conn, key, clock())
        queries.add_samples(conn, "connect_four_2p", settings.pipeline.train_after_samples, clock())
    return SelfplayScheduler(store, queue, settings, clock=clock)


def _queued(scheduler: SelfplayScheduler, key: str) -> int:
    return len(scheduler.queue.list(statuses=[JobStatus.QUEUED], job_type=jobs.SELFPLAY, config_key=key))


def test_tick_tops_up_each_config_in_proportion_and_only_up_to_its_target(scheduler: SelfplayScheduler) -> None:
    added = scheduler.tick()
    # tic-tac-toe has no samples yet (deficit 1: weight 3); connect four has a full batch (weight 1)
    assert added == {"tic_tac_toe_2p": 4, "connect_four_2p": 1}
    assert scheduler.tick() == {}
    lease = scheduler.queue.claim("w1", types=[jobs.SELFPLAY])
    assert lease is not None
    assert sum(scheduler.tick().values()) == 1
    assert _queued(scheduler, "tic_tac_toe_2p") + _queued(scheduler, "connect_four_2p") == 5


def test_paused_configs_get_no_new_selfplay(scheduler: SelfplayScheduler) -> None:
    with scheduler.store.transaction() as conn:
        queries.update_pipeline(conn, "tic_tac_toe_2p", 1.0, paused=True, pause_reason="test")
    assert scheduler.tick() == {"connect_four_2p": 6}
