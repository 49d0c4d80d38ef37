"""Circuit breakers: the pure rules and the stored, event-publishing manager."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.helpers import FakeClock
from zeroloop.app import App
from zeroloop.cluster.breakers import (
    Breaker,
    BreakerState,
    CircuitBreakers,
    after_failure,
    after_success,
    allows,
    node_key,
    stage_key,
    transition,
)
from zeroloop.config import HealthSettings
from zeroloop.errors import ZeroloopError
from zeroloop.store.schema import events

SETTINGS = HealthSettings(breaker_failure_threshold=3, breaker_recovery_s=300, breaker_half_open_successes=2)


def test_closed_opens_at_the_threshold_then_half_opens_after_recovery() -> None:
    breaker = Breaker("stage:train")
    for now in (1.0, 2.0):
        breaker = after_failure(breaker, now, SETTINGS)
        assert breaker.state is BreakerState.CLOSED
    breaker = after_failure(breaker, 3.0, SETTINGS)
    assert (breaker.state, breaker.opened_at) == (BreakerState.OPEN, 3.0)
    assert not allows(breaker, 302.0, SETTINGS)
    assert allows(breaker, 303.0, SETTINGS)  # recovery time passed: a trial may go through


def test_half_open_closes_after_enough_successes_and_reopens_on_a_failure() -> None:
    opened = Breaker("k", BreakerState.OPEN, failures=3, opened_at=0.0)
    trial = after_success(opened, 300.0, SETTINGS)
    assert (trial.state, trial.successes) == (BreakerState.HALF_OPEN, 1)
    assert after_success(trial, 301.0, SETTINGS).state is BreakerState.CLOSED
    reopened = after_failure(trial, 301.0, SETTINGS)
    assert (reopened.state, reopened.opened_at) == (BreakerState.OPEN, 301.0)


def test_a_success_while_closed_resets_the_failure_count() -> None:
    breaker = after_failure(after_failure(Breaker("k"), 1, SETTINGS), 2, SETTINGS)
    breaker = after_success(breaker, 3, SETTINGS)
    assert breaker.failures == 0
    with pytest.raises(ZeroloopError, match="illegal"):
        transition(BreakerState.CLOSED, BreakerState.HALF_OPEN)


def test_stored_breakers_publish_their_transitions(app: App) -> None:
    clock = FakeClock()
    breakers = CircuitBreakers(app.store, app.bus, SETTINGS, clock=clock)
    key = node_key("n1")
    assert stage_key("train") == "stage:train"
    for _ in range(3):
        breakers.record_failure(key)
    assert breakers.get(key).state is BreakerState.OPEN
    assert not breakers.allow(key)
    clock.advance(300)
    assert breakers.refresh_all() == [key]
    assert breakers.get(key).state is BreakerState.HALF_OPEN  # the queue's claim only skips 'open'
    breakers.record_success(key)
    assert breakers.record_success(key) is BreakerState.CLOSED
    with app.store.read() as conn:
        rows = conn.execute(sa.select(events.c.type, events.c.payload).order_by(events.c.id)).all()
    assert [(r.type, r.payload["key"]) for r in rows] == [("CIRCUIT_OPENED", key), ("CIRCUIT_CLOSED", key)]
    assert [b.state.value for b in breakers.list_breakers()] == ["closed"]


def test_two_writers_creating_the_same_breaker_both_count(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each writer pauses between reading the breaker and writing it, until the other has read it
    # too (or 2 s passed): without the row created and locked first, both find none and both
    # insert it, and one of them fails on the duplicate key (PostgreSQL).
    import contextlib
    import threading

    from zeroloop.cluster import breakers as module

    both_read = threading.Barrier(2, timeout=2.0)
    rule = module.after_failure

    def paused(breaker: Breaker, now: float, settings: HealthSettings) -> Breaker:
        with contextlib.suppress(threading.BrokenBarrierError):  # the other waits for this one's lock: go on alone
            both_read.wait()
        return rule(breaker, now, settings)

    monkeypatch.setattr(module, "after_failure", paused)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            CircuitBreakers(app.store, app.bus, SETTINGS).record_failure("provider:new")
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=write) for _ in range(2)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=30)
    assert errors == []
    assert CircuitBreakers(app.store, app.bus, SETTINGS).get("provider:new").failures == 2
