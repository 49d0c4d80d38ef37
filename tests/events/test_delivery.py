"""Delivery on both backends: order, filters, dedup, rollback, retries, dead letters, transactional handlers."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from tests.events.conftest import no_sleep, node_lost
from tests.helpers import FakeClock
from zeroloop.config import EventSettings
from zeroloop.errors import EventError
from zeroloop.events.bus import Event, EventBus
from zeroloop.events.consumer import ConsumerSpec
from zeroloop.events.deadletters import DeadLetterRetrier, DeadLetters, LetterStatus
from zeroloop.events.runner import ConsumerRunner
from zeroloop.store.queries import consumers as consumer_queries
from zeroloop.store.schema import decisions


def _run(bus: EventBus, specs: list[ConsumerSpec], settings: EventSettings, clock: FakeClock) -> int:
    runner = ConsumerRunner(bus, specs, settings, clock=clock, sleep=no_sleep)
    return asyncio.run(runner.run_until_idle())


def test_consumer_receives_everything_in_order_and_resumes(
    bus: EventBus, event_settings: EventSettings, clock: FakeClock
) -> None:
    seen: list[int] = []
    spec = ConsumerSpec("c", lambda event: seen.append(event.id), types=("NODE_LOST",))
    first = [bus.publish("NODE_LOST", node_lost(str(i))) for i in range(120)]
    assert _run(bus, [spec], event_settings, clock) == 120
    later = [bus.publish("NODE_LOST", node_lost("b")) for _ in range(3)]
    assert _run(bus, [spec], event_settings, clock) == 3  # a new runner resumes from the stored cursor
    assert seen == first + later


def test_async_and_sync_handlers_sync_off_the_loop(
    bus: EventBus, event_settings: EventSettings, clock: FakeClock
) -> None:
    import threading

    loop_threads: list[bool] = []

    def sync_handler(event: Event) -> None:
        loop_threads.append(threading.current_thread() is threading.main_thread())

    async def async_handler(event: Event) -> None:
        loop_threads.append(threading.current_thread() is threading.main_thread())

    bus.publish("NODE_LOST", node_lost())
    specs = [ConsumerSpec("sync", sync_handler), ConsumerSpec("async", async_handler)]
    _run(bus, specs, event_settings, clock)
    assert loop_threads == [False, True]


def test_filters_by_type_and_config_key(bus: EventBus, event_settings: EventSettings, clock: FakeClock) -> None:
    seen: list[str] = []
    paused = {"reason": "r"}
    bus.publish("PIPELINE_PAUSED", {**paused, "config_key": "hex_2p"})
    bus.publish("PIPELINE_PAUSED", {**paused, "config_key": "go_2p"})
    bus.publish("NODE_LOST", node_lost())
    spec = ConsumerSpec("hex", lambda e: seen.append(f"{e.type}:{e.config_key}"), config_keys=["hex_2p"])
    _run(bus, [spec], event_settings, clock)
    assert seen == ["PIPELINE_PAUSED:hex_2p"]
    with bus.store.read() as conn:  # the cursor moved past what did not match, so retention is not held back
        cursor = consumer_queries.get_cursor(conn, "hex")
    assert cursor is not None and cursor[1] == 3


def test_dedup_key_publishes_once(bus: EventBus, event_settings: EventSettings, clock: FakeClock) -> None:
    seen: list[int] = []
    first = bus.publish("NODE_LOST", node_lost(), dedup_key="k1")
    assert bus.publish("NODE_LOST", node_lost("other"), dedup_key="k1") == first
    assert bus.publish_many([("NODE_LOST", node_lost(), "k1"), ("NODE_LOST", node_lost(), "k2")])[0] == first
    _run(bus, [ConsumerSpec("c", lambda e: seen.append(e.id))], event_settings, clock)
    assert len(seen) == 2


def test_rolled_back_event_is_never_delivered(bus: EventBus, event_settings: EventSettings, clock: FakeClock) -> None:
    seen: list[str] = []
    with pytest.raises(RuntimeError), bus.store.transaction():
        bus.publish("NODE_LOST", node_lost("ghost"))
        raise RuntimeError("state change failed")
    bus.publish("NODE_LOST", node_lost("real"))
    sub = bus.subscribe(lambda e: seen.append(e.payload["node"]), types=["NODE_LOST"])
    _run(bus, [ConsumerSpec("c", lambda e: seen.append(e.payload["node"]))], event_settings, clock)
    assert seen == ["real"]
    assert sub.durable is False


def test_invalid_publish_names_type_and_field(bus: EventBus) -> None:
    with pytest.raises(EventError, match="NO_SUCH"):
        bus.publish("NO_SUCH", {})
    with pytest.raises(EventError, match="silent_s"):
        bus.publish_many([("NODE_LOST", node_lost()), ("NODE_LOST", {"node": "x"})])
    with bus.store.read() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM events")).scalar_one() == 0


def test_handler_failing_twice_then_succeeding(bus: EventBus, event_settings: EventSettings, clock: FakeClock) -> None:
    calls: list[int] = []

    def flaky(event: Event) -> None:
        calls.append(event.id)
        if len(calls) <= 2:
            raise ValueError("not yet")

    bus.publish("NODE_LOST", node_lost())
    _run(bus, [ConsumerSpec("flaky", flaky)], event_settings, clock)
    assert len(calls) == 3
    assert DeadLetters(bus.store).list() == []
    counters = {row["event_type"]: row for row in _metrics(bus)}
    assert (counters["NODE_LOST"]["failed"], counters["NODE_LOST"]["delivered"]) == (2, 1)


def _metrics(bus: EventBus) -> list[sa.RowMapping]:
    with bus.store.read() as conn:
        return consumer_queries.read_metrics(conn)


def test_dead_letter_round_trip(bus: EventBus, event_settings: EventSettings, clock: FakeClock) -> None:
    healthy = {"ok": False}
    handled: list[int] = []

    def handler(event: Event) -> None:
        if not healthy["ok"]:
            raise RuntimeError("downstream is down")
        handled.append(event.id)

    spec = ConsumerSpec("dl", handler)
    bad = bus.publish("NODE_LOST", node_lost("bad"))
    _run(bus, [spec], event_settings, clock)
    letters = DeadLetters(bus.store, clock=clock)
    [letter] = letters.list()
    assert (letter.event_id, letter.attempts, letter.status) == (bad, 3, LetterStatus.PENDING)
    assert "downstream is down" in letter.error and "Traceback" in letter.traceback
    after = bus.publish("NODE_LOST", node_lost("next"))
    _run(bus, [spec], event_settings, clock)  # the consumer moved on
    assert handled == []  # still failing: "next" is dead-lettered too
    healthy["ok"] = True
    retrier = DeadLetterRetrier(bus.store, [spec], event_settings, clock=clock)
    assert asyncio.run(retrier.run_once()) == 0  # not due yet
    clock.now += event_settings.dlq_retry_interval_s
    assert asyncio.run(retrier.run_once()) == 2
    assert sorted(handled) == [bad, after]
    assert {item.status for item in letters.list(statuses=())} == {LetterStatus.RESOLVED}


def test_dead_letters_park_and_can_be_retried_or_dropped(bus: EventBus, clock: FakeClock) -> None:
    settings = EventSettings(retry_initial_s=0, max_attempts=1, dlq_max_retries=1)

    def fail(event: Event) -> None:
        raise RuntimeError("always")

    spec = ConsumerSpec("f", fail)
    bus.publish("NODE_LOST", node_lost())
    _run(bus, [spec], settings, clock)
    retrier = DeadLetterRetrier(bus.store, [spec], settings, clock=clock)
    clock.now += settings.dlq_retry_interval_s
    asyncio.run(retrier.run_once())
    letters = DeadLetters(bus.store, clock=clock)
    [letter] = letters.list()
    assert (letter.status, letter.attempts) == (LetterStatus.PARKED, 2)
    assert letters.retry(letter.id).status is LetterStatus.PENDING
    assert letters.drop(letter.id).status is LetterStatus.DROPPED
    with pytest.raises(EventError, match="cannot go from dropped"):
        letters.drop(letter.id)


def test_transactional_handler_commits_its_writes_with_the_cursor(
    bus: EventBus, event_settings: EventSettings, clock: FakeClock
) -> None:
    attempts: list[int] = []

    def handler(event: Event) -> None:
        attempts.append(event.id)
        with bus.store.transaction() as conn:  # joins the runner's transaction
            conn.execute(
                sa.insert(decisions).values(
                    config_key="k", kind="x", outcome=str(len(attempts)), evidence={}, created_at=0
                )
            )
        if len(attempts) == 1:
            raise RuntimeError("fails after writing: the write must roll back")

    bus.publish("NODE_LOST", node_lost())
    _run(bus, [ConsumerSpec("tx", handler, transactional=True)], event_settings, clock)
    with bus.store.read() as conn:
        outcomes = list(conn.execute(sa.select(decisions.c.outcome)).scalars())
        cursor = consumer_queries.get_cursor(conn, "tx")
    assert outcomes == ["2"]
    assert cursor is not None and cursor[1] == 1


def test_slow_handler_times_out(bus: EventBus, clock: FakeClock) -> None:
    settings = EventSettings(handler_timeout_s=0.05, max_attempts=1, retry_initial_s=0)

    async def slow(event: Event) -> None:
        await asyncio.sleep(5)

    bus.publish("NODE_LOST", node_lost())
    _run(bus, [ConsumerSpec("slow", slow)], settings, clock)
    [letter] = DeadLetters(bus.store).list()
    assert "HandlerTimeout" in letter.error


def test_transactional_async_handler_is_refused() -> None:
    async def handler(event: Event) -> None:
        return None

    with pytest.raises(EventError, match="transactional"):
        ConsumerSpec("x", handler, transactional=True)
    with pytest.raises(EventError, match="NOPE"):
        ConsumerSpec("x", print, types=("NOPE",))


def test_in_process_subscription_gets_what_is_published_after_start(
    bus: EventBus, event_settings: EventSettings, clock: FakeClock
) -> None:
    seen: list[str] = []
    bus.publish("NODE_LOST", node_lost("before"))
    bus.subscribe(lambda e: seen.append(e.payload["node"]), types=["NODE_LOST"])

    async def scenario() -> None:
        runner = ConsumerRunner(bus, [], event_settings, clock=clock, sleep=no_sleep)
        await runner.start()
        bus.publish("NODE_LOST", node_lost("after"))
        bus.publish("PIPELINE_PAUSED", {"config_key": "k", "reason": "r"})
        await runner.run_until_idle()

    asyncio.run(scenario())
    assert seen == ["after"]
    with bus.store.read() as conn:
        assert consumer_queries.list_consumers(conn) == []  # nothing durable was registered


def test_run_wakes_on_new_events_and_stops(bus: EventBus, event_settings: EventSettings, clock: FakeClock) -> None:
    seen: list[int] = []

    async def scenario() -> None:
        stop: list[ConsumerRunner] = []

        def handle(event: Event) -> None:
            seen.append(event.id)
            stop[0].stop()

        bus.subscribe(handle)
        runner = ConsumerRunner(bus, [], event_settings, clock=clock)
        stop.append(runner)
        await runner.start()
        task = asyncio.create_task(runner.run())
        await asyncio.to_thread(bus.publish, "NODE_LOST", node_lost())
        await asyncio.wait_for(task, 30)  # bounded: run() returns once the handler has stopped it

    asyncio.run(scenario())
    assert len(seen) == 1


def test_subscriptions_are_served_by_one_runner_per_process(
    bus: EventBus, event_settings: EventSettings, clock: FakeClock
) -> None:
    seen: list[int] = []
    bus.subscribe(lambda e: seen.append(e.id))

    async def scenario() -> None:
        first = ConsumerRunner(bus, [], event_settings, clock=clock, sleep=no_sleep)
        second = ConsumerRunner(bus, [], event_settings, clock=clock, sleep=no_sleep)
        await first.start()
        await second.start()
        bus.publish("NODE_LOST", node_lost())
        await first.run_until_idle()
        await second.run_until_idle()

    asyncio.run(scenario())
    assert len(seen) == 1
