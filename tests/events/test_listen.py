"""PostgreSQL wake-up: NOTIFY wakes a running consumer, and a listener whose connection dies catches up."""

from __future__ import annotations

import asyncio

from tests.events.conftest import node_lost
from zeroloop.config import EventSettings
from zeroloop.events.bus import Event, EventBus
from zeroloop.events.consumer import ConsumerSpec
from zeroloop.events.runner import ConsumerRunner
from zeroloop.store.database import Store


def test_listener_reconnects_and_catches_up(pg_store: Store) -> None:
    store = pg_store
    # A fallback far longer than the test: only NOTIFY or the reconnect can deliver in time.
    settings = EventSettings(listen_fallback_s=60, retry_initial_s=0.05, retry_max_s=0.2)
    bus = EventBus(store, node="n", source="t")

    async def scenario() -> list[int]:
        seen: list[int] = []
        arrived = asyncio.Event()

        async def handle(event: Event) -> None:
            seen.append(event.id)
            arrived.set()

        runner = ConsumerRunner(bus, [ConsumerSpec("listener", handle)], settings)
        await runner.start()
        task = asyncio.create_task(runner.run())
        for label in ("first", "after-reconnect"):
            if label == "after-reconnect":
                await asyncio.to_thread(_kill_listeners, store)
            arrived.clear()
            await asyncio.to_thread(bus.publish, "NODE_LOST", node_lost(label))
            await asyncio.wait_for(arrived.wait(), 20)
        runner.stop()
        await asyncio.wait_for(task, 20)
        return seen

    assert len(asyncio.run(scenario())) == 2


def _kill_listeners(store: Store) -> None:
    with store.transaction() as conn:
        killed = conn.exec_driver_sql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE starts_with(query, 'LISTEN') AND pid <> pg_backend_pid() AND datname = current_database()"
        ).scalar_one()
    assert killed == 1
