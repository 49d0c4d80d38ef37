"""Delivers the log to consumers: reads after each cursor, calls handlers, retries, dead-letters.

Delivery is at-least-once. A durable consumer's cursor is moved only after its handler
succeeded (or the event was dead-lettered, in the same transaction as the letter), so a
consumer killed at any point re-handles at most the events since its last
acknowledgement and never skips one. Non-transactional consumers acknowledge once per
batch, transactional ones with each event, inside the handler's transaction.

A runner given a `fence` (the leader's lease guard, for leader-only consumers) runs it
first in every transaction that handles an event, moves a cursor or writes a dead
letter. A deposed leader's delivery therefore commits nothing; the runner stops and
`run()` raises the LeaseError, so the daemon steps down instead of retrying.

A failure of the moment (`is_transient`: the store unreachable or locked, a refused
enqueue at backpressure STOP) is not the handler's fault: the event stays
unacknowledged and is retried with backoff and jitter for as long as the failure lasts,
never dead-lettered for it; `outage_since` says since when (None when delivering).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy.engine import Connection

from zeroloop.config import EventSettings
from zeroloop.errors import EventError, LeaseError
from zeroloop.events import deadletters
from zeroloop.events.bus import Event, EventBus
from zeroloop.events.consumer import ConsumerSpec, Fence, call_handler, is_transient
from zeroloop.events.wakeup import Waker, waker_for
from zeroloop.store.queries import consumers as consumer_queries
from zeroloop.store.queries import events as queries
from zeroloop.store.queries.events import Position

log = logging.getLogger(__name__)
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


def transient_delay_s(failures: int, settings: EventSettings) -> float:
    """The wait (seconds) after `failures` transient failures in a row: doubling, capped, with full jitter."""
    cap = max(settings.poll_interval_s, min(settings.retry_max_s, settings.outage_retry_max_s))
    base = min(cap, settings.poll_interval_s * 2.0 ** min(failures, 30))
    return base / 2 + random.uniform(0, base / 2)


@dataclass
class _State:
    spec: ConsumerSpec
    position: Position = (0, 0)
    acked: Position = (0, 0)
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    ack_task: asyncio.Task[None] | None = None
    acked_at: float = -math.inf  # when the cursor was last written (the runner's clock, seconds)


@dataclass(frozen=True)
class _Batch:
    events: list[Event]
    high_water: Position | None
    held_back: bool


class ConsumerRunner:
    """Runs durable consumers and the bus's in-process subscriptions in one asyncio task.

    `run()` runs until `stop()`; `run_until_idle()` delivers everything readable and
    returns (for tests and one-shot tools); `run_once()` is one pass over all consumers.
    """

    def __init__(
        self,
        bus: EventBus,
        specs: Sequence[ConsumerSpec],
        settings: EventSettings,
        *,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        waker: Waker | None = None,
        fence: Fence | None = None,
    ) -> None:
        """`fence(conn)` guards every write of a leader-only runner (see the module docstring)."""
        self.bus = bus
        self.store = bus.store
        self.settings = settings
        self.clock = clock
        self.sleep = sleep
        self.waker = waker or waker_for(bus.store, settings, sleep)
        self._states = [_State(spec) for spec in specs]
        self._check_names()
        self._started = False
        self._held_back = False  # the last pass saw committed events waiting behind an open transaction
        self._stop = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.fence = fence
        self.outage_since: float | None = None
        self.transient_failures = 0  # transient failures seen (each waited out, none counted as an attempt)

    async def start(self) -> None:
        """Register durable consumers and place in-process ones at the end of the log."""
        self._loop = asyncio.get_running_loop()
        if self._started:
            return
        # In-process subscriptions go to one runner per process: the first that starts.
        self._states += [_State(spec) for spec in self.bus.claim_subscriptions(self)]
        self._check_names()
        await asyncio.to_thread(self._register)
        self._started = True

    def _check_names(self) -> None:
        names = [state.spec.name for state in self._states]
        if len(set(names)) != len(names):
            raise EventError(f"consumer names must be unique within a runner: {sorted(names)}")

    def _register(self) -> None:
        with self.store.transaction() as conn:
            end = queries.high_water(conn, limit_horizon=queries.horizon(conn))
            for state in self._states:
                spec = state.spec
                if spec.durable:
                    start = end if spec.start == "latest" else (0, 0)
                    state.position = consumer_queries.ensure_consumer(
                        conn,
                        spec.name,
                        types=spec.types,
                        config_keys=spec.config_keys,
                        node=self.bus.node,
                        start=start,
                        now=self.clock(),
                    )
                else:
                    state.position = end
                state.acked = state.position
                state.acked_at = self.clock()

    async def run_once(self) -> int:
        """One pass: deliver one batch to every consumer; return how many events were delivered or dead-lettered."""
        await self.start()
        handled = 0
        self._held_back = False
        for state in self._states:
            if self._stop.is_set():
                break
            handled += await self._pass(state)
        return handled

    async def run_until_idle(self, max_passes: int = 10_000) -> int:
        """Deliver until a pass finds nothing (or `max_passes` passes); return events handled."""
        total = 0
        for _ in range(max_passes):
            handled = await self.run_once()
            total += handled
            if handled == 0 and not self._held_back:
                await self.flush()
                return total
            if handled == 0:
                await self.sleep(self.settings.poll_interval_s)
        return total

    async def run(self) -> None:
        """Deliver until stop(): read on each wake-up, or after the fallback interval.

        Registration happens in the first pass, so a store that is down at start is waited out like any outage.
        """
        await self.waker.start()
        try:
            failures = 0
            while not self._stop.is_set():
                try:
                    handled = await self.run_once()
                except LeaseError:
                    raise
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    failures += 1
                    self._outage(exc)
                    await self._pause(transient_delay_s(failures, self.settings))
                    continue
                failures = 0
                self.outage_since = None
                if handled:
                    continue
                # Events of finished transactions may wait behind an older one still open;
                # that one may end without a NOTIFY, so look again soon instead of waiting.
                timeout = self.settings.poll_interval_s if self._held_back else self.settings.listen_fallback_s
                stop = asyncio.create_task(self._stop.wait())
                wake = asyncio.create_task(self.waker.wait(timeout))
                await asyncio.wait({stop, wake}, return_when=asyncio.FIRST_COMPLETED)
                for task in (stop, wake):
                    task.cancel()
                await asyncio.gather(stop, wake, return_exceptions=True)
        finally:
            await self.flush()
            await self.waker.close()
            self.bus.release_subscriptions(self)

    def _outage(self, exc: BaseException) -> None:
        self.transient_failures += 1
        if self.outage_since is None:
            self.outage_since = self.clock()
            log.warning("consumer runner: store or queue unavailable, retrying with backoff: %s", exc)

    async def _pause(self, seconds: float) -> None:
        """Wait `seconds` with the injected sleep, or less when stopped meanwhile."""
        sleeper = asyncio.ensure_future(self.sleep(seconds))
        stop = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({sleeper, stop}, return_when=asyncio.FIRST_COMPLETED)
        for task in (sleeper, stop):
            task.cancel()
        await asyncio.gather(sleeper, stop, return_exceptions=True)

    def stop(self) -> None:
        """Ask run() to return after the event being handled; safe from any thread (sync handlers run in one)."""
        loop = self._loop
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if loop is None or on_loop or loop.is_closed():
            self._stop.set()
        else:
            loop.call_soon_threadsafe(self._stop.set)

    async def _pass(self, state: _State) -> int:
        batch = await asyncio.to_thread(self._fetch, state)
        self._held_back = self._held_back or batch.held_back
        handled = 0
        for event in batch.events:
            if self._stop.is_set():
                break
            if not await self._deliver(state, event):
                break  # stopped while retrying: the event stays unacknowledged
            handled += 1
        else:
            if batch.high_water is not None and batch.high_water > state.position:
                state.position = batch.high_water  # nothing matched up to here: skip past it
        self._schedule_ack(state)
        return handled

    def _fetch(self, state: _State) -> _Batch:
        spec = state.spec
        with self.store.read() as conn:
            # The marks may be taken before the read: below the horizon the log is final
            # (PostgreSQL), and SQLite reads one snapshot for the whole transaction.
            limit_horizon, high, newest = queries.marks(conn)
            if high <= state.position:
                return _Batch([], None, newest > high)
            rows = queries.read_after(
                conn,
                state.position,
                limit_horizon=limit_horizon,
                types=spec.types,
                config_keys=spec.config_keys,
                limit=self.settings.batch_size,
            )
        full = len(rows) >= self.settings.batch_size
        return _Batch([Event.from_row(row) for row in rows], None if full else high, newest > high)

    async def _deliver(self, state: _State, event: Event) -> bool:
        """Deliver with retries; True once handled or dead-lettered, False if stopped first."""
        spec = state.spec
        attempt = 0
        transient = 0
        while True:

            def acknowledge(conn: Connection) -> None:
                # call_handler already fenced this transaction.
                self._write_ack(conn, state, event.position, {(event.type, "delivered"): 1}, fenced=True)

            try:
                await call_handler(
                    spec,
                    event,
                    store=self.store,
                    timeout_s=self.settings.handler_timeout_s,
                    acknowledge=acknowledge,
                    fence=self.fence if spec.durable else None,
                )
            except LeaseError:
                self._stop.set()
                raise  # deposed: nothing was committed; the daemon steps down
            except Exception as exc:  # noqa: BLE001 - a failing handler is retried, then dead-lettered
                if is_transient(exc):
                    # Not the handler's fault: wait it out, without counting an attempt.
                    transient += 1
                    self._outage(exc)
                    if self._stop.is_set():
                        return False
                    await self._pause(transient_delay_s(transient, self.settings))
                    continue
                attempt += 1
                self._count(state, event.type, "failed")
                log.warning("consumer %s failed on event %s (attempt %d): %s", spec.name, event.id, attempt, exc)
                if attempt >= self.settings.max_attempts:
                    await asyncio.to_thread(self._dead_letter, state, event, attempt, exc)
                    return True
                if self._stop.is_set():
                    return False
                delay = min(self.settings.retry_max_s, self.settings.retry_initial_s * 2 ** (attempt - 1))
                await self.sleep(delay)
                continue
            self.outage_since = None
            if spec.transactional:
                state.position = state.acked = event.position
            else:
                self._count(state, event.type, "delivered")
                state.position = event.position
            return True

    @staticmethod
    def _count(state: _State, event_type: str, counter: str) -> None:
        key = (event_type, counter)
        state.counts[key] = state.counts.get(key, 0) + 1

    def _write_ack(
        self,
        conn: Connection,
        state: _State,
        position: Position,
        counts: dict[tuple[str, str], int],
        *,
        fenced: bool = False,
    ) -> None:
        if state.spec.durable:
            if self.fence is not None and not fenced:
                self.fence(conn)
            consumer_queries.advance_cursor(conn, state.spec.name, position, now=self.clock())
        if counts:
            consumer_queries.bump_metrics(conn, state.spec.name, counts)

    def _schedule_ack(self, state: _State, *, force: bool = False) -> None:
        """Acknowledge in the background: a commit per batch must not delay the next delivery.

        At most one acknowledgement per consumer is in flight; the cursor only moves
        forward in the store, so a late one can never move it back. A cursor that moved
        only past events the consumer does not take is written at most every
        `listen_fallback_s` (and on flush): re-reading those after a restart costs nothing,
        while writing it on every wake-up cost a write turn per consumer per event.
        """
        if state.ack_task is not None and not state.ack_task.done():
            return
        if state.position == state.acked and not state.counts:
            return
        if not state.spec.durable and not state.counts:
            state.acked = state.position
            return
        skipped_only = not state.counts
        if skipped_only and not force and self.clock() - state.acked_at < self.settings.listen_fallback_s:
            return
        position, counts = state.position, state.counts
        state.counts = {}

        def write() -> None:
            with self.store.transaction() as conn:
                self._write_ack(conn, state, position, counts)

        def done(task: asyncio.Task[None]) -> None:
            if task.cancelled() or task.exception() is not None:
                log.warning(
                    "consumer %s: acknowledgement failed, retried next pass: %s",
                    state.spec.name,
                    "cancelled" if task.cancelled() else task.exception(),
                )
                for key, amount in counts.items():
                    state.counts[key] = state.counts.get(key, 0) + amount
                return
            state.acked = max(state.acked, position)
            state.acked_at = self.clock()

        state.ack_task = asyncio.create_task(asyncio.to_thread(write))
        state.ack_task.add_done_callback(done)

    async def flush(self) -> None:
        """Wait until every delivered event is acknowledged in the store."""
        for _ in range(5):  # bounded: the in-flight acknowledgement, then the rest, then retries of failures
            for state in self._states:
                self._schedule_ack(state, force=True)
            pending = [state.ack_task for state in self._states if state.ack_task and not state.ack_task.done()]
            if not pending:
                return
            await asyncio.gather(*pending, return_exceptions=True)

    def _dead_letter(self, state: _State, event: Event, attempts: int, error: BaseException) -> None:
        self._count(state, event.type, "dead")
        with self.store.transaction() as conn:
            letter = deadletters.record(
                conn,
                event=event,
                consumer=state.spec.name,
                attempts=attempts,
                error=error,
                now=self.clock(),
                retry_in_s=self.settings.dlq_retry_interval_s,
            )
            self._write_ack(conn, state, event.position, state.counts)
        state.position = state.acked = event.position
        state.counts = {}
        log.error("consumer %s dead-lettered event %s as letter %s: %s", state.spec.name, event.id, letter, error)
