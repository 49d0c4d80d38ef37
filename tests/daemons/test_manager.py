"""The daemon manager: backoff, crash loops, held dependents, leadership, graceful shutdown, persistence."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.helpers import FakeClock, make_app, run_async
from zeroloop.app import App
from zeroloop.config import DaemonSettings, Settings
from zeroloop.daemons.backoff import RestartTracker
from zeroloop.daemons.daemon import DaemonContext, DaemonHealth, DaemonState, HealthState, transition
from zeroloop.daemons.manager import DaemonManager
from zeroloop.daemons.table import DaemonSpec, Layer, RestartPolicy
from zeroloop.errors import DaemonError
from zeroloop.store.queries import daemons as daemon_queries
from zeroloop.store.schema import events

MAX_STEPS = 20_000


class Crasher:
    """Raises as soon as it runs."""

    async def run(self, stop: asyncio.Event) -> None:
        raise RuntimeError("boom")

    def health(self) -> DaemonHealth:
        return DaemonHealth(HealthState.HEALTHY)


class Sleeper:
    """Runs until stopped; records its stop in a shared list; can ignore stop (to test the deadline)."""

    def __init__(self, name: str, stopped: list[str], *, stubborn: bool = False) -> None:
        self.name = name
        self.stopped = stopped
        self.stubborn = stubborn

    async def run(self, stop: asyncio.Event) -> None:
        try:
            if self.stubborn:
                await asyncio.Event().wait()
            await stop.wait()
        finally:
            self.stopped.append(self.name)

    def health(self) -> DaemonHealth:
        return DaemonHealth(HealthState.HEALTHY, {"name": self.name})


def spec(name: str, factory: object, *deps: str, **kwargs: object) -> DaemonSpec:
    return DaemonSpec(name, factory, "test", frozenset({"full"}), depends_on=deps, **kwargs)  # type: ignore[arg-type]


def manager(app: App, specs: list[DaemonSpec], clock: FakeClock, **settings: float) -> DaemonManager:
    context = DaemonContext(app, clock=clock)
    return DaemonManager(specs, context, settings=DaemonSettings(**settings), clock=clock, sleep=clock.sleep)  # type: ignore[arg-type]


async def step_until(mgr: DaemonManager, clock: FakeClock, done: object) -> None:
    for _ in range(MAX_STEPS):
        await mgr.step()
        if done():  # type: ignore[operator]
            return
        await clock.sleep(mgr.settings.supervise_interval_s)
    raise AssertionError("condition not reached within the step bound")


def test_transition_refuses_illegal_moves() -> None:
    assert transition(DaemonState.PENDING, DaemonState.RUNNING) is DaemonState.RUNNING
    with pytest.raises(DaemonError, match="illegal state change stopped -> running"):
        transition(DaemonState.STOPPED, DaemonState.RUNNING)
    with pytest.raises(DaemonError):
        transition(DaemonState.FAILED, DaemonState.RUNNING)


def test_restart_tracker_doubles_caps_and_resets_after_healthy_time() -> None:
    tracker = RestartTracker(DaemonSettings(crash_loop_restarts=100, crash_loop_window_s=1e9))
    now = 0.0
    delays = []
    for _ in range(7):
        delay = tracker.on_crash(now, started_at=now - 1)
        assert delay is not None
        delays.append(delay)
        now += delay + 1
    assert delays == [10, 20, 40, 80, 160, 300, 300]
    assert tracker.on_crash(now + 1000, started_at=now) == 10  # ran 10 healthy minutes: backoff starts over


@run_async
async def test_crash_loop_backs_off_then_fails_with_an_event(
    store_url: str, tmp_path: Path, settings: Settings
) -> None:
    clock = FakeClock()
    builds: list[float] = []

    def factory(_ctx: DaemonContext) -> Crasher:
        builds.append(clock())
        return Crasher()

    with make_app(store_url, tmp_path) as app:
        mgr = manager(
            app,
            [spec("crasher", factory, layer=Layer.FOUNDATIONAL)],
            clock,
            crash_loop_restarts=8,
            crash_loop_window_s=10_000,
        )
        await mgr.start()
        await step_until(mgr, clock, lambda: mgr.state("crasher") is DaemonState.FAILED)
        record = mgr.records["crasher"]
        assert record.tracker.delays == [10, 20, 40, 80, 160, 300, 300, 300]
        gaps = [later - earlier for earlier, later in itertools.pairwise(builds)]
        for gap, delay in zip(gaps, record.tracker.delays, strict=True):
            assert delay <= gap <= delay + 2 * mgr.settings.supervise_interval_s
        assert record.restarts == 8
        assert "crash loop" in (record.reason or "")
        with app.store.read() as conn:
            rows = daemon_queries.list_daemons(conn)
            crash_events = conn.execute(sa.select(events.c.payload).where(events.c.type == "DAEMON_CRASH_LOOP")).all()
        assert [(r["name"], r["state"], r["restarts"]) for r in rows] == [("crasher", "failed", 8)]
        assert rows[0]["last_error"] == "RuntimeError: boom"
        assert len(crash_events) == 1
        assert crash_events[0].payload["daemon"] == "crasher"
        await mgr.shutdown()


@run_async
async def test_default_settings_give_five_restarts_before_failing(app: App) -> None:
    clock = FakeClock()
    mgr = manager(app, [spec("crasher", lambda _ctx: Crasher())], clock)
    await mgr.start()
    await step_until(mgr, clock, lambda: mgr.state("crasher") is DaemonState.FAILED)
    assert mgr.records["crasher"].tracker.delays == [10, 20, 40, 80, 160]


@run_async
async def test_dependents_of_a_failed_daemon_are_held_and_say_why(app: App) -> None:
    clock = FakeClock()
    stopped: list[str] = []

    def broken(_ctx: DaemonContext) -> Sleeper:
        raise ImportError("no module named zeroloop.missing")

    specs = [
        spec("base", lambda _ctx: Crasher(), restart=RestartPolicy.NEVER),
        spec("user", lambda _ctx: Sleeper("user", stopped), "base"),
        spec("unbuildable", broken),
        spec("after", lambda _ctx: Sleeper("after", stopped), "unbuildable"),
        spec("free", lambda _ctx: Sleeper("free", stopped)),
    ]
    mgr = manager(app, specs, clock)
    await mgr.start()
    await step_until(mgr, clock, lambda: mgr.state("user") is DaemonState.HELD)
    assert mgr.state("base") is DaemonState.FAILED
    assert mgr.records["user"].reason == "dependency base failed: RuntimeError: boom"
    assert mgr.state("unbuildable") is DaemonState.FAILED  # a factory that cannot build fails at once, no storm
    assert mgr.records["unbuildable"].restarts == 0
    assert mgr.state("after") is DaemonState.HELD
    assert "no module named zeroloop.missing" in (mgr.records["after"].reason or "")
    assert mgr.state("free") is DaemonState.RUNNING
    await mgr.shutdown()
    assert mgr.state("free") is DaemonState.STOPPED


@run_async
async def test_shutdown_stops_in_reverse_dependency_order_within_the_deadline(app: App) -> None:
    clock = FakeClock()
    stopped: list[str] = []
    specs = [
        spec("c", lambda _ctx: Sleeper("c", stopped), "b"),
        spec("a", lambda _ctx: Sleeper("a", stopped)),
        spec("b", lambda _ctx: Sleeper("b", stopped, stubborn=True), "a"),
    ]
    mgr = manager(app, specs, clock, drain_deadline_s=0.05)
    await mgr.start()
    await step_until(mgr, clock, lambda: all(r.state is DaemonState.RUNNING for r in mgr.records.values()))
    await mgr.shutdown()
    assert mgr.stop_order == ["c", "b", "a"]
    assert stopped == ["c", "b", "a"]  # b ignored its stop and was cancelled after the deadline
    with app.store.read() as conn:
        assert {row["state"] for row in daemon_queries.list_daemons(conn)} == {"stopped"}


@run_async
async def test_leader_only_daemons_run_only_while_leading(app: App) -> None:
    clock = FakeClock()
    stopped: list[str] = []
    specs = [
        spec("leader_election", lambda _ctx: Sleeper("leader_election", stopped)),
        spec("singleton", lambda _ctx: Sleeper("singleton", stopped), "leader_election", leader_only=True),
    ]
    mgr = manager(app, specs, clock)
    await mgr.start()
    await mgr.step()
    assert mgr.state("singleton") is DaemonState.STANDBY
    mgr.context.leadership.held = True
    await mgr.step()
    assert mgr.state("singleton") is DaemonState.RUNNING
    mgr.context.leadership.held = False
    await mgr.step()
    assert mgr.state("singleton") is DaemonState.STANDBY
    assert stopped == ["singleton"]
    await mgr.shutdown()


@run_async
async def test_health_checks_are_persisted(app: App) -> None:
    clock = FakeClock()
    mgr = manager(app, [spec("s", lambda _ctx: Sleeper("s", []))], clock)
    await mgr.start()
    await step_until(mgr, clock, lambda: mgr.records["s"].health is not None)
    with app.store.read() as conn:
        (row,) = daemon_queries.list_daemons(conn)
    assert row["state"] == "running"
    assert row["health"]["state"] == "healthy"
    assert row["health"]["details"] == {"name": "s"}
    await mgr.shutdown()
