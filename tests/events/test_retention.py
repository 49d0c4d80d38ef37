"""Retention prunes by age and count, never an event a consumer or a live dead letter still needs."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from tests.events.conftest import no_sleep, node_lost
from tests.helpers import FakeClock
from zeroloop.config import EventSettings
from zeroloop.events.bus import Event, EventBus
from zeroloop.events.consumer import ConsumerSpec
from zeroloop.events.retention import Pruner, prune
from zeroloop.events.runner import ConsumerRunner
from zeroloop.events.stats import stats


def _ids(bus: EventBus) -> list[int]:
    with bus.store.read() as conn:
        return list(conn.execute(sa.text("SELECT id FROM events ORDER BY id")).scalars())


def test_prune_by_age_waits_for_the_slowest_consumer(bus: EventBus, clock: FakeClock) -> None:
    settings = EventSettings(retention_max_age_s=100, retry_initial_s=0)
    seen: list[int] = []
    slow = ConsumerSpec("slow", lambda e: seen.append(e.id), types=("NODE_LOST",))
    ids = [bus.publish("NODE_LOST", node_lost(str(i))) for i in range(3)]
    asyncio.run(ConsumerRunner(bus, [slow], settings, clock=clock, sleep=no_sleep).run_until_idle())
    ids += [bus.publish("NODE_LOST", node_lost(str(i))) for i in range(3)]  # "slow" is down meanwhile
    clock.now += 1000
    assert prune(bus.store, settings, clock=clock) == 3
    assert _ids(bus) == ids[3:]
    assert {c.name: c.lag for c in stats(bus.store).consumers} == {"slow": 3}
    asyncio.run(ConsumerRunner(bus, [slow], settings, clock=clock, sleep=no_sleep).run_until_idle())
    assert seen == ids


def test_prune_by_count_keeps_the_newest(bus: EventBus, clock: FakeClock) -> None:
    settings = EventSettings.model_construct(retention_max_count=2)  # below the setting's floor, for a small test
    ids = [bus.publish("NODE_LOST", node_lost()) for _ in range(5)]
    assert asyncio.run(Pruner(bus.store, settings, clock=clock).run_once()) == 3
    assert _ids(bus) == ids[3:]


def test_prune_never_deletes_the_newest_or_dead_lettered(bus: EventBus, clock: FakeClock) -> None:
    settings = EventSettings(retention_max_age_s=1, max_attempts=1, retry_initial_s=0)
    bad = bus.publish("NODE_LOST", node_lost("bad"))
    newest = bus.publish("NODE_LOST", node_lost("ok"))

    def handler(event: Event) -> None:
        if event.id == bad:
            raise RuntimeError("bad")

    asyncio.run(
        ConsumerRunner(bus, [ConsumerSpec("c", handler)], settings, clock=clock, sleep=no_sleep).run_until_idle()
    )
    clock.now += 1000
    assert prune(bus.store, settings, clock=clock) == 0
    assert _ids(bus) == [bad, newest]
