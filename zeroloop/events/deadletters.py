"""The dead-letter queue: events a consumer's handler failed on `max_attempts` times in a row.

A dead letter is PENDING while the retrier re-delivers it every `dlq_retry_interval_s`
seconds; a re-delivery that succeeds RESOLVES it; after `dlq_max_retries` failed
re-deliveries it is PARKED for a human (`zeroloop dlq retry` puts it back to PENDING);
`zeroloop dlq drop` DROPS it. The consumer moved past the event when it was dead-lettered,
so the letter is the only thing that still remembers the event needs handling.

A retrier given a `fence` (leader-only consumers) runs it first in every transaction it
writes, and stops with the LeaseError once refused. A re-delivery that fails only
because the store is unavailable or the queue refuses work (`is_transient`) leaves the
letter as it was, uncounted; the pass ends and the next one comes after a short backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy.engine import Connection, RowMapping

from zeroloop.config import EventSettings
from zeroloop.errors import EventError, LeaseError
from zeroloop.events.bus import Event
from zeroloop.events.consumer import ConsumerSpec, Fence, call_handler, is_transient
from zeroloop.store.database import Store
from zeroloop.store.queries import consumers as consumer_queries
from zeroloop.store.queries import dead_letters as queries
from zeroloop.store.queries import events as event_queries

log = logging.getLogger(__name__)
Clock = Callable[[], float]


class LetterStatus(StrEnum):
    """Where a dead letter is in its life."""

    PENDING = "pending"
    PARKED = "parked"
    RESOLVED = "resolved"
    DROPPED = "dropped"


_MOVES: dict[tuple[LetterStatus, LetterStatus], str] = {
    (LetterStatus.PENDING, LetterStatus.PENDING): "a re-delivery failed; try again later",
    (LetterStatus.PENDING, LetterStatus.RESOLVED): "a re-delivery succeeded",
    (LetterStatus.PENDING, LetterStatus.PARKED): "automatic re-deliveries ran out",
    (LetterStatus.PARKED, LetterStatus.PENDING): "a human asked for a retry",
    (LetterStatus.PENDING, LetterStatus.DROPPED): "a human gave up on it",
    (LetterStatus.PARKED, LetterStatus.DROPPED): "a human gave up on it",
}
LIVE = (LetterStatus.PENDING, LetterStatus.PARKED)


def transition(current: LetterStatus, target: LetterStatus) -> LetterStatus:
    """Return `target` if a dead letter may move there from `current`; raise EventError otherwise."""
    if (current, target) not in _MOVES:
        raise EventError(f"a dead letter cannot go from {current} to {target}")
    return target


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter (times: epoch seconds)."""

    id: int
    event_id: int
    consumer: str
    status: LetterStatus
    attempts: int
    error: str
    traceback: str
    created_at: float
    updated_at: float
    next_retry_at: float | None

    @classmethod
    def from_row(cls, row: RowMapping) -> DeadLetter:
        """Build from a `dead_letters` row."""
        values: dict[str, Any] = dict(row)
        values["status"] = LetterStatus(values["status"])
        return cls(**values)


def record(
    conn: Connection, *, event: Event, consumer: str, attempts: int, error: BaseException, now: float, retry_in_s: float
) -> int:
    """Dead-letter `event` for `consumer` in the caller's transaction; return the letter id."""
    text = "".join(traceback.format_exception(error))
    return queries.insert_dead_letter(
        conn,
        event_id=event.id,
        consumer=consumer,
        status=LetterStatus.PENDING,
        attempts=attempts,
        error=f"{type(error).__name__}: {error}",
        traceback=text,
        now=now,
        next_retry_at=now + retry_in_s,
    )


class DeadLetters:
    """Named operations on the dead-letter queue, for the CLI and the retrier."""

    def __init__(self, store: Store, *, clock: Clock = time.time) -> None:
        self.store = store
        self.clock = clock

    def list(
        self, *, statuses: Sequence[LetterStatus] = LIVE, consumer: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        """Dead letters in `statuses` (all when empty), newest first."""
        with self.store.read() as conn:
            rows = queries.list_dead_letters(conn, statuses=list(statuses), consumer=consumer, limit=limit)
        return [DeadLetter.from_row(row) for row in rows]

    def get(self, letter_id: int) -> DeadLetter:
        """One dead letter; EventError if there is none with that id."""
        with self.store.read() as conn:
            row = queries.get_dead_letter(conn, letter_id)
        if row is None:
            raise EventError(f"no dead letter {letter_id}: see `zeroloop dlq ls`")
        return DeadLetter.from_row(row)

    def event(self, letter: DeadLetter) -> Event | None:
        """The event a dead letter is about, or None if it is gone from the log."""
        with self.store.read() as conn:
            row = event_queries.get_event(conn, letter.event_id)
        return Event.from_row(row) if row else None

    def retry(self, letter_id: int) -> DeadLetter:
        """Make a dead letter due for re-delivery now (PENDING, next retry at now)."""
        return self._move(letter_id, LetterStatus.PENDING, next_retry_at=self.clock())

    def drop(self, letter_id: int) -> DeadLetter:
        """Give up on a dead letter."""
        return self._move(letter_id, LetterStatus.DROPPED, next_retry_at=None)

    def _move(self, letter_id: int, target: LetterStatus, *, next_retry_at: float | None) -> DeadLetter:
        letter = self.get(letter_id)
        if letter.status is LetterStatus.PENDING and target is LetterStatus.PENDING:
            pass  # already pending: only bring its retry time forward
        else:
            transition(letter.status, target)
        with self.store.transaction() as conn:
            moved = queries.update_dead_letter(
                conn,
                letter_id,
                expect_status=letter.status,
                status=target,
                now=self.clock(),
                next_retry_at=next_retry_at,
            )
        if not moved:
            raise EventError(f"dead letter {letter_id} changed while being updated; look again and retry")
        return self.get(letter_id)

    def counts(self) -> dict[str, int]:
        """Dead letters per status."""
        with self.store.read() as conn:
            return queries.count_by_status(conn)


class DeadLetterRetrier:
    """Re-delivers due dead letters of the consumers it knows the handlers of; a daemon loop.

    `run_once()` handles every letter due now and returns how many it tried; `run()`
    repeats that every `dlq_retry_interval_s` seconds until `stop()`.
    """

    def __init__(
        self,
        store: Store,
        specs: Sequence[ConsumerSpec],
        settings: EventSettings,
        *,
        clock: Clock = time.time,
        batch: int = 100,
        fence: Fence | None = None,
    ) -> None:
        """`fence(conn)` guards every write of a leader-only retrier."""
        self.store = store
        self.specs = {spec.name: spec for spec in specs}
        self.settings = settings
        self.clock = clock
        self.batch = batch
        self.fence = fence
        self.outage_since: float | None = None
        self._stop = asyncio.Event()

    async def run_once(self) -> int:
        """Re-deliver every due PENDING letter once; return how many were tried."""
        if not self.specs:
            return 0
        rows = await asyncio.to_thread(self._due)
        for row in rows:
            await self._redeliver(DeadLetter.from_row(row))
        return len(rows)

    async def run(self) -> None:
        """Call run_once every dlq_retry_interval_s seconds until stop()."""
        failures = 0
        while not self._stop.is_set():
            wait_s = self.settings.dlq_retry_interval_s
            try:
                await self.run_once()
                failures = 0
                self.outage_since = None
            except LeaseError:
                raise
            except Exception as exc:
                if not is_transient(exc):
                    raise
                failures += 1
                if self.outage_since is None:
                    self.outage_since = self.clock()
                    log.warning("dead-letter retrier: store or queue unavailable, retrying with backoff: %s", exc)
                wait_s = min(
                    wait_s, self.settings.outage_retry_max_s, self.settings.poll_interval_s * 2.0 ** min(failures, 30)
                )
            try:
                await asyncio.wait_for(self._stop.wait(), wait_s)
            except TimeoutError:
                continue

    def stop(self) -> None:
        """Ask run() to return after the current pass."""
        self._stop.set()

    def _due(self) -> list[RowMapping]:
        with self.store.read() as conn:
            return queries.due_dead_letters(
                conn, consumers=sorted(self.specs), status=LetterStatus.PENDING, now=self.clock(), limit=self.batch
            )

    async def _redeliver(self, letter: DeadLetter) -> None:
        spec = self.specs[letter.consumer]
        event = await asyncio.to_thread(DeadLetters(self.store, clock=self.clock).event, letter)
        if event is None:
            log.warning("dead letter %s: event %s is gone from the log; dropping it", letter.id, letter.event_id)
            await asyncio.to_thread(self._finish, letter, LetterStatus.DROPPED, None)
            return

        def resolve(conn: Connection) -> None:
            self._resolve(conn, letter, event)

        try:
            await call_handler(
                spec,
                event,
                store=self.store,
                timeout_s=self.settings.handler_timeout_s,
                acknowledge=resolve,
                fence=self.fence,
            )
        except LeaseError:
            raise
        except Exception as exc:
            if is_transient(exc):
                raise  # not the handler's fault: the letter stays as it is, run() backs off
            await asyncio.to_thread(self._failed, letter, exc)
            return
        if not spec.transactional:
            await asyncio.to_thread(self._resolve_tx, letter, event)

    def _resolve_tx(self, letter: DeadLetter, event: Event) -> None:
        with self.store.transaction() as conn:
            if self.fence is not None:
                self.fence(conn)
            self._resolve(conn, letter, event)

    def _resolve(self, conn: Connection, letter: DeadLetter, event: Event) -> None:
        transition(letter.status, LetterStatus.RESOLVED)
        queries.update_dead_letter(
            conn,
            letter.id,
            expect_status=letter.status,
            status=LetterStatus.RESOLVED,
            now=self.clock(),
            next_retry_at=None,
        )
        consumer_queries.bump_metrics(conn, letter.consumer, {(event.type, "delivered"): 1})

    def _failed(self, letter: DeadLetter, error: BaseException) -> None:
        attempts = letter.attempts + 1
        retries = attempts - self.settings.max_attempts
        target = LetterStatus.PARKED if retries >= self.settings.dlq_max_retries else LetterStatus.PENDING
        transition(letter.status, target)
        now = self.clock()
        with self.store.transaction() as conn:
            if self.fence is not None:
                self.fence(conn)
            queries.update_dead_letter(
                conn,
                letter.id,
                expect_status=letter.status,
                status=target,
                now=now,
                next_retry_at=now + self.settings.dlq_retry_interval_s if target is LetterStatus.PENDING else None,
                attempts=attempts,
                error=f"{type(error).__name__}: {error}",
                traceback="".join(traceback.format_exception(error)),
            )

    def _finish(self, letter: DeadLetter, target: LetterStatus, next_retry_at: float | None) -> None:
        transition(letter.status, target)
        with self.store.transaction() as conn:
            if self.fence is not None:
                self.fence(conn)
            queries.update_dead_letter(
                conn,
                letter.id,
                expect_status=letter.status,
                status=target,
                now=self.clock(),
                next_retry_at=next_retry_at,
            )
