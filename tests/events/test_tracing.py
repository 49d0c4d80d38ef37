"""Tracing: spans nest within a trace, published events carry it, and a consumer continues it."""

from __future__ import annotations

import asyncio

from zeroloop.config import EventSettings
from zeroloop.events.bus import Event, EventBus
from zeroloop.events.consumer import ConsumerSpec
from zeroloop.events.runner import ConsumerRunner
from zeroloop.store.database import Store
from zeroloop.tracing import current_span, get_trace_id, span, traced


def test_spans_nest_inside_one_trace_and_end_with_it() -> None:
    assert get_trace_id() is None
    with span("outer") as outer:
        with span("inner") as inner:
            assert inner.trace_id == outer.trace_id
            assert inner.parent_id == outer.span_id
            assert current_span() is inner
        assert current_span() is outer
    assert get_trace_id() is None


def test_traced_coroutines_run_in_a_span() -> None:
    seen: list[str | None] = []

    @traced("work")
    async def work() -> None:
        seen.append(get_trace_id())

    asyncio.run(work())
    assert seen[0] is not None


def test_a_consumer_continues_the_trace_of_the_event_it_handles(store: Store) -> None:
    bus = EventBus(store, node="n1", source="test")
    handled: list[tuple[str | None, str | None]] = []

    def handler(event: Event) -> None:
        handled.append((event.trace_id, get_trace_id()))

    with span("selfplay_game") as opened:
        bus.publish("NODE_LOST", {"node": "w1", "silent_s": 1.0})
    spec = ConsumerSpec("tracer", handler, types=("NODE_LOST",))
    runner = ConsumerRunner(bus, [spec], EventSettings(poll_interval_s=0.01))
    asyncio.run(runner.run_until_idle())
    assert handled == [(opened.trace_id, opened.trace_id)]


def test_separate_spans_start_separate_traces() -> None:
    with span("a") as first:
        pass
    with span("a") as second:
        pass
    assert first.trace_id != second.trace_id
