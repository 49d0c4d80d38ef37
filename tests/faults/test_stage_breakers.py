"""Stage circuit breakers are consulted: an open one holds back a new round, or new selfplay, and says so."""

from __future__ import annotations

import pytest

from tests.helpers import FakeClock
from tests.pipeline.test_coordinator import CONFIG, Loop
from zeroloop.cluster.breakers import BreakerState, CircuitBreakers, stage_key
from zeroloop.config import Settings
from zeroloop.pipeline import jobs
from zeroloop.pipeline.scheduler import SelfplayScheduler
from zeroloop.pipeline.stages import Stage
from zeroloop.store.database import Store
from zeroloop.store.queries import pipelines as queries


def _open(breakers: CircuitBreakers, stage: str, settings: Settings) -> None:
    for _ in range(settings.health.breaker_failure_threshold):
        breakers.record_failure(stage_key(stage))
    assert breakers.get(stage_key(stage)).state is BreakerState.OPEN


@pytest.fixture
def loop(store: Store, settings: Settings) -> Loop:
    settings.pipeline.train_after_samples = 10
    settings.pipeline.window_samples = 15
    return Loop(store, settings)


def test_an_open_stage_circuit_holds_a_round_back_until_it_lets_trials_through(
    loop: Loop, store: Store, settings: Settings, clock: FakeClock
) -> None:
    breakers = CircuitBreakers(store, loop.bus, settings.health, clock=clock)
    loop.coordinator.breakers = breakers
    _open(breakers, jobs.TRAIN, settings)
    for name in ("a", "b", "c"):
        loop.feed(loop.batch(name * 64, 8))
    assert loop.state()["stage"] == Stage.SELFPLAY
    assert loop.queue.list(job_type=jobs.EXPORT) == []
    with store.read() as conn:
        decisions = queries.list_decisions(conn, CONFIG)
    assert [(d["kind"], d["outcome"], d["evidence"]["stages"]) for d in decisions] == [("breaker", "held", ["train"])]
    assert "circuit breaker open for train" in decisions[0]["evidence"]["reason"]

    clock.advance(settings.health.breaker_recovery_s + 1)  # half-open: trials may go through
    loop.feed(loop.batch("d" * 64, 8))
    assert loop.state()["stage"] == Stage.EXPORT
    assert len(loop.queue.list(job_type=jobs.EXPORT)) == 1


def test_an_open_selfplay_circuit_holds_back_new_selfplay(
    loop: Loop, store: Store, settings: Settings, clock: FakeClock
) -> None:
    breakers = CircuitBreakers(store, loop.bus, settings.health, clock=clock)
    scheduler = SelfplayScheduler(store, loop.queue, settings, clock=clock, breakers=breakers)
    with store.transaction() as conn:
        queries.ensure_pipeline(conn, CONFIG, clock())
    _open(breakers, jobs.SELFPLAY, settings)
    assert scheduler.tick() == {}
    assert scheduler.held_back == 1 and loop.queue.list(job_type=jobs.SELFPLAY) == []
    clock.advance(settings.health.breaker_recovery_s + 1)
    assert sum(scheduler.tick().values()) > 0
