"""How a consumer learns that the log has grown: LISTEN/NOTIFY on PostgreSQL, a signal file on SQLite.

A wake-up carries no data and may be lost or spurious: consumers always re-read the log
from their cursor, so a missed NOTIFY costs latency (bounded by `listen_fallback_s`),
never an event. A listener that loses its connection reconnects with backoff and wakes
its consumers, which catch up from their cursors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import psycopg

from zeroloop.config import EventSettings
from zeroloop.store.database import Store
from zeroloop.store.queries.events import NOTIFY_CHANNEL
from zeroloop.store.signal import EventSignal, Stamp

log = logging.getLogger(__name__)
Sleep = Callable[[float], Awaitable[None]]


class Waker(Protocol):
    """Waits until the log may have new events, or a timeout passes."""

    async def start(self) -> None:
        """Begin listening (no-op for polling)."""

    async def wait(self, timeout_s: float) -> None:
        """Return when woken or after `timeout_s` seconds, whichever is first."""

    async def close(self) -> None:
        """Stop listening."""


class SignalWaker:
    """SQLite: wait until the event signal file changes (one stat() per poll interval), or the timeout passes."""

    def __init__(self, signal: EventSignal, settings: EventSettings, sleep: Sleep = asyncio.sleep) -> None:
        self.signal = signal
        self.settings = settings
        self.sleep = sleep
        self._seen: Stamp = None

    async def start(self) -> None:
        """Remember the signal as it is now: the runner reads the log once on start anyway."""
        self._seen = self.signal.stamp()

    async def wait(self, timeout_s: float) -> None:
        """Return when the signal rang since the last wait, or after `timeout_s` seconds.

        The check starts every `poll_interval_s` and doubles while nothing rings, up to
        `idle_poll_max_s`: a busy loop is served at once, and an idle process wakes a few
        times a second instead of twenty.
        """
        waited = 0.0
        step = self.settings.poll_interval_s
        while True:
            stamp = self.signal.stamp()
            if stamp != self._seen:
                self._seen = stamp
                return
            if waited >= timeout_s:
                return
            pause = min(step, timeout_s - waited)
            await self.sleep(pause)
            waited += pause
            step = min(step * 2, max(self.settings.idle_poll_max_s, self.settings.poll_interval_s))

    async def close(self) -> None:
        """Nothing to close."""


class ListenWaker:
    """PostgreSQL: a dedicated autocommit psycopg connection LISTENing on the events channel."""

    def __init__(self, store: Store, settings: EventSettings) -> None:
        self.conninfo = store.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.settings = settings
        self._woken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        """Start the listening task and wait (bounded) until LISTEN is in place."""
        self._task = asyncio.create_task(self._listen(), name="zeroloop-events-listen")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), self.settings.listen_fallback_s)

    async def wait(self, timeout_s: float) -> None:
        """Return on the next NOTIFY or after `timeout_s` (at most listen_fallback_s)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), min(timeout_s, self.settings.listen_fallback_s))
        self._woken.clear()

    async def close(self) -> None:
        """Cancel the listening task and close its connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _listen(self) -> None:
        delay = self.settings.retry_initial_s or 0.1
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self._ready.set()
                    # Events may have been appended while we were not listening.
                    self._woken.set()
                    delay = self.settings.retry_initial_s or 0.1
                    async for _notify in conn.notifies():
                        self._woken.set()
            except psycopg.Error as exc:
                log.warning("event listener lost its connection (%s); reconnecting in %.1f s", exc, delay)
                self._woken.set()
                await asyncio.sleep(delay)
                delay = min(max(delay * 2, 0.1), max(self.settings.retry_max_s, 0.1))


def waker_for(store: Store, settings: EventSettings, sleep: Sleep = asyncio.sleep) -> Waker:
    """The wake-up mechanism for the store's backend."""
    if store.event_signal is None:
        return ListenWaker(store, settings)
    return SignalWaker(store.event_signal, settings, sleep)
