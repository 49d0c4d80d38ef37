"""A cursor that moved only past events a consumer does not take is written lazily, and never lost."""

from __future__ import annotations

import asyncio

from tests.events.conftest import node_lost
from tests.helpers import FakeClock
from zeroloop.config import EventSettings
from zeroloop.events.bus import Event, EventBus
from zeroloop.events.consumer import ConsumerSpec
from zeroloop.events.runner import ConsumerRunner
from zeroloop.store.database import Store
from zeroloop.store.queries import consumers as consumer_queries


def test_a_cursor_moved_only_past_other_events_is_written_after_the_fallback_or_on_flush(store: Store) -> None:
    clock = FakeClock()
    bus = EventBus(store, node="n1", source="test", clock=clock)
    settings = EventSettings(listen_fallback_s=2.0)
    handled: list[Event] = []
    spec = ConsumerSpec("lazy", handled.append, types=("NODE_REGISTERED",))
    runner = ConsumerRunner(bus, [spec], settings, clock=clock, sleep=clock.sleep)

    def cursor() -> object:
        with store.read() as conn:
            return consumer_queries.get_cursor(conn, "lazy")

    async def scenario() -> None:
        await runner.run_once()
        await runner.flush()
        start = cursor()
        bus.publish("NODE_LOST", node_lost())  # not a type this consumer takes
        await runner.run_once()
        await asyncio.gather(*[t for s in runner._states if (t := s.ack_task)])
        assert cursor() == start  # skipped past in memory; no write turn for it yet
        clock.advance(settings.listen_fallback_s)
        bus.publish("NODE_LOST", node_lost("b"))
        await runner.run_once()
        await asyncio.gather(*[t for s in runner._states if (t := s.ack_task)])
        moved = cursor()
        assert moved != start  # written once the fallback interval passed
        bus.publish("NODE_LOST", node_lost("c"))
        await runner.run_once()
        await runner.flush()
        assert cursor() != moved  # and always on flush (a stopping runner)
        assert handled == []

    asyncio.run(scenario())
