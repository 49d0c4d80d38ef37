"""SQLite's wake-up: a committed append rings the signal file, and a waiting consumer returns on the ring."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.events.conftest import node_lost
from zeroloop.config import EventSettings
from zeroloop.events.bus import EventBus
from zeroloop.events.wakeup import SignalWaker, waker_for
from zeroloop.store import migrate
from zeroloop.store.database import Store
from zeroloop.store.signal import MAX_BYTES, EventSignal


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with Store(url) as store:
        migrate.upgrade(store)
    return url


def _publish(store: Store) -> None:
    EventBus(store, node="n1", source="test").publish("NODE_LOST", node_lost())


def test_a_committed_append_rings_once_and_a_rolled_back_one_not_at_all(sqlite_url: str) -> None:
    with Store(sqlite_url) as store:
        signal = store.event_signal
        assert signal is not None
        assert signal.stamp() is None  # nothing appended yet
        _publish(store)
        first = signal.stamp()
        assert first is not None and first[0] == 1
        with pytest.raises(RuntimeError), store.transaction():
            _publish(store)
            raise RuntimeError("rolled back")
        assert signal.stamp() == first
        with store.transaction() as conn:
            conn.exec_driver_sql("SELECT 1")  # a transaction without events rings nothing
        assert signal.stamp() == first


def test_the_signal_file_starts_again_past_its_limit(tmp_path: Path) -> None:
    signal = EventSignal(tmp_path / "db.events")
    (tmp_path / "db.events").write_bytes(b"." * MAX_BYTES)
    signal.ring()
    assert signal.stamp() is not None and signal.stamp()[0] == 1  # type: ignore[index]


def test_a_waiter_returns_on_a_ring_from_another_process_and_otherwise_at_its_timeout(sqlite_url: str) -> None:
    settings = EventSettings(poll_interval_s=0.05, idle_poll_max_s=0.4)
    slept: list[float] = []
    with Store(sqlite_url) as waiting, Store(sqlite_url) as other:  # two processes' stores on one file

        async def sleep(seconds: float) -> None:
            slept.append(seconds)
            if len(slept) == 3:
                _publish(other)  # rings during the third poll

        waker = waker_for(waiting, settings, sleep)
        assert isinstance(waker, SignalWaker)

        async def scenario() -> None:
            await waker.start()
            await waker.wait(5.0)  # the ring on the third poll ends the wait
            assert len(slept) == 3
            await waker.wait(1.0)  # no ring: the whole timeout, in steps doubling up to idle_poll_max_s
            assert sum(slept[3:]) == pytest.approx(1.0)
            assert slept[3:] == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.25])
            _publish(other)
            before = len(slept)
            await waker.wait(5.0)  # rang while nobody waited: returns at once
            assert len(slept) == before

        asyncio.run(scenario())
