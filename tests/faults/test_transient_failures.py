"""Failures of the moment (the store unavailable, a queue at STOP) are waited out, never counted as failures."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError, ProgrammingError

from tests.events.conftest import no_sleep, node_lost
from tests.helpers import FakeClock, run_async
from tests.pipeline.test_executor import SELFPLAY
from tests.pipeline.test_executor import _app as executor_app
from zeroloop.app import App
from zeroloop.cluster.agent import NodeAgent, NodeLostDetector
from zeroloop.cluster.nodes import NodeInfo, Nodes
from zeroloop.config import EventSettings, Settings
from zeroloop.daemons.adapters import queue_reaper_daemon
from zeroloop.daemons.daemon import DaemonContext, HealthState, Leadership, LoopDaemon
from zeroloop.daemons.manager import DaemonManager
from zeroloop.errors import BackpressureRefused, StoreUnavailable
from zeroloop.events.bus import Event, EventBus
from zeroloop.events.consumer import ConsumerSpec, is_transient
from zeroloop.events.deadletters import DeadLetters
from zeroloop.events.runner import ConsumerRunner
from zeroloop.pipeline import jobs
from zeroloop.pipeline.executor import JobExecutor
from zeroloop.queue.jobs import JobStatus
from zeroloop.store.queries import consumers as consumer_queries
from zeroloop.store.schema import events

TRANSIENT = [
    BackpressureRefused("queue 'train' is at backpressure STOP"),
    StoreUnavailable("cannot reach the store"),
]


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda e: type(e).__name__)
def test_a_transient_failure_is_retried_without_counting_or_dead_lettering(
    bus: EventBus, clock: FakeClock, error: Exception
) -> None:
    settings = EventSettings(max_attempts=1, retry_initial_s=0.0, retry_max_s=0.0, poll_interval_s=0.01)
    calls: list[int] = []

    def handler(event: Event) -> None:
        calls.append(event.id)
        if len(calls) <= 3:
            raise error

    bus.publish("NODE_LOST", node_lost())
    runner = ConsumerRunner(
        bus, [ConsumerSpec("c", handler, transactional=True)], settings, clock=clock, sleep=no_sleep
    )
    assert asyncio.run(runner.run_until_idle()) == 1
    assert len(calls) == 4 and runner.transient_failures == 3
    assert DeadLetters(bus.store, clock=clock).list() == []
    with bus.store.read() as conn:
        (metrics,) = [row for row in consumer_queries.read_metrics(conn) if row["consumer"] == "c"]
    assert (metrics["delivered"], metrics["failed"], metrics["dead"]) == (1, 0, 0)


class _Flaky(LoopDaemon):
    def __init__(self, failures: int, clock: FakeClock) -> None:
        super().__init__(60.0, clock=clock, outage_retry_max_s=2.0)
        self.failures = failures

    async def tick(self) -> None:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("cannot reach the store")


@run_async
async def test_a_loop_daemon_reports_degraded_through_an_outage_and_recovers(clock: FakeClock) -> None:
    daemon = _Flaky(failures=LoopDaemon.max_consecutive_errors + 2, clock=clock)
    for _ in range(LoopDaemon.max_consecutive_errors + 2):
        await daemon.run_once()  # never raises: an outage is not a crash
        assert daemon.health().state is HealthState.DEGRADED
        assert 0 < daemon.next_wait_s() <= 2.0  # backoff, not the 60 s interval
    assert daemon.health().details["store_unavailable_since"] == clock()
    await daemon.run_once()
    assert daemon.health().state is HealthState.HEALTHY and daemon.errors == 0
    assert daemon.next_wait_s() == 60.0


@run_async
async def test_the_executor_waits_out_an_outage_while_claiming(app: App, tmp_path: Path) -> None:
    executor = JobExecutor(app.models, app.bus, app.queue, app.artifacts, app.settings, node="w1")
    app.settings.daemons.outage_retry_max_s = 0.05
    claims = 0
    degraded: list[bool] = []

    def claim(*_args: object) -> None:
        nonlocal claims
        claims += 1
        degraded.append("store_unavailable_since" in executor.health())
        if claims <= 3:
            raise StoreUnavailable("cannot reach the store")
        executor.stop()

    app.queue.claim = claim  # type: ignore[method-assign, assignment]
    await asyncio.wait_for(executor.run(idle_wait_s=0.01), timeout=30)
    assert claims == 4
    assert degraded == [False, True, True, True]
    assert "store_unavailable_since" not in executor.health()


def test_which_store_errors_are_transient() -> None:
    def wrapped(orig: Exception) -> OperationalError:
        return OperationalError("SELECT 1", {}, orig)

    assert is_transient(wrapped(sqlite3.OperationalError("database is locked")))
    assert is_transient(wrapped(sqlite3.OperationalError("database or disk is full")))
    assert not is_transient(wrapped(sqlite3.OperationalError("no such table: jobs")))  # a mistake, not a moment
    assert not is_transient(ProgrammingError("SELECT", {}, Exception("syntax error")))
    assert not is_transient(ValueError("bad payload"))


@run_async
async def test_the_supervisor_outlives_any_number_of_failed_passes(app: App, clock: FakeClock) -> None:
    context = DaemonContext(app, Leadership(), clock)
    manager = DaemonManager([], context, sleep=clock.sleep)
    stop = asyncio.Event()
    passes = 0
    outage_passes = 2000  # hours of outage at the longest backoff: the delay must stay bounded

    async def step() -> None:
        nonlocal passes
        passes += 1
        if passes <= outage_passes:
            raise StoreUnavailable("cannot reach the store")
        assert manager.failing_since is not None  # still failing when this pass begins
        stop.set()

    manager.step = step  # type: ignore[method-assign]
    began = clock()
    await asyncio.wait_for(manager.supervise(stop), timeout=60)
    assert passes == outage_passes + 1 and manager.failed_passes == outage_passes
    waited_s = clock() - began
    assert waited_s <= outage_passes * app.settings.daemons.outage_retry_max_s
    assert manager.failing_since is None


@run_async
async def test_after_a_store_outage_no_live_node_is_taken_for_lost(app: App, clock: FakeClock) -> None:
    registry = Nodes(app.store, app.bus, clock=clock)
    agent = NodeAgent(registry, lambda: _node("alive"), lambda: {"cpu_pct": 1.0}, 10, clock=clock)
    registry.register(_node("dead"))
    detector = NodeLostDetector(registry, 60, lambda _node: None, 10, clock=clock)
    await agent.run_once()
    clock.advance(30)
    await detector.run_once()
    assert detector.lost_total == 0

    # The store goes away for two minutes: nobody heartbeats, the detector's ticks fail.
    detect_lost, registry.detect_lost = registry.detect_lost, _unreachable  # type: ignore[method-assign]
    ping, app.store.ping = app.store.ping, _unreachable  # type: ignore[method-assign]
    for _ in range(12):
        clock.advance(10)
        await detector.run_once()
    assert detector.health().state is HealthState.DEGRADED
    registry.detect_lost, app.store.ping = detect_lost, ping  # type: ignore[method-assign]

    await detector.run_once()  # the store is back: both nodes look silent for 2 minutes ...
    assert detector.lost_total == 0  # ... but that is the outage's doing: no judgement yet
    clock.advance(5)
    await agent.run_once()  # the live node is heard again within its interval and backoff
    clock.advance(detector.grace_s)
    await detector.run_once()
    assert registry.get("alive")["status"] == "active"  # type: ignore[index]
    assert registry.get("dead")["status"] == "lost"  # type: ignore[index]
    assert detector.lost_total == 1


def _node(node_id: str) -> NodeInfo:
    return NodeInfo(id=node_id, host="h", provider="local", cpu_count=1, memory_bytes=1, disk_bytes=1)


def _unreachable(*_args: object) -> None:
    raise StoreUnavailable("cannot reach the store")


@run_async
async def test_the_reaper_gives_workers_a_heartbeat_to_renew_before_it_reaps(app: App, clock: FakeClock) -> None:
    app.settings.queue.reaper_interval_s = 0.1  # a reaper may not scan less often than a lease lasts
    app.settings.queue.lease_s = 0.3
    app.settings.daemons.outage_retry_max_s = 0.1
    daemon = queue_reaper_daemon(DaemonContext(app, Leadership(), clock))
    service = daemon.service
    assert service.grace_s == pytest.approx(0.2)  # type: ignore[attr-defined]
    began: list[float] = []

    class Reaper:
        async def run(self, stop: asyncio.Event) -> None:
            began.append(time.monotonic())

    service.reaper = Reaper()  # type: ignore[attr-defined]
    start = time.monotonic()
    await asyncio.wait_for(service.run(), timeout=10)
    assert began and began[0] - start >= 0.2  # every run, so also the one after an outage, waits the grace first


def test_a_result_is_reported_once_the_store_is_back(store_url: str, tmp_path: Path, settings: Settings) -> None:
    with executor_app(store_url, tmp_path, SELFPLAY) as app:
        app.settings.daemons.outage_retry_max_s = 0.05
        job = app.queue.enqueue(jobs.SELFPLAY, "ringrift_2p", {"games": 2})
        executor = JobExecutor(app.models, app.bus, app.queue, app.artifacts, app.settings, node="w1")
        complete = app.queue.complete
        refusals = 0

        def complete_when_back(*args: Any, **kwargs: Any) -> Any:
            nonlocal refusals
            if refusals < 3:
                refusals += 1
                raise StoreUnavailable("cannot reach the store")
            return complete(*args, **kwargs)

        app.queue.complete = complete_when_back  # type: ignore[method-assign]
        try:
            assert asyncio.run(executor.run_once())
        finally:
            executor.close()
        assert refusals == 3 and app.queue.get(job.id).status is JobStatus.COMPLETED
        with app.store.read() as conn:
            kinds = list(conn.execute(sa.select(events.c.type)).scalars())
        assert kinds.count("SELFPLAY_COMPLETE") == 1 and kinds.count("JOB_COMPLETED") == 1
