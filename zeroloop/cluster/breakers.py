"""Circuit breakers per node (`node:<id>`) and per stage (`stage:<name>`), persisted in the store.

CLOSED lets work through and counts consecutive failures; at
`health.breaker_failure_threshold` it OPENS (CIRCUIT_OPENED) and refuses work for
`breaker_recovery_s` seconds; then it is HALF_OPEN and lets trials through:
`breaker_half_open_successes` successes CLOSE it (CIRCUIT_CLOSED), one failure opens it
again. The state is stored as 'closed' | 'open' | 'half_open'; the queue's claim skips
nodes whose breaker row says 'open'. The rules are pure functions over `Breaker`, so
they are tested without a store; `CircuitBreakers` applies them in one transaction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from zeroloop.config import HealthSettings
from zeroloop.daemons.daemon import Clock
from zeroloop.errors import ZeroloopError
from zeroloop.events.bus import EventBus
from zeroloop.events.wiring import declare
from zeroloop.store.database import Store
from zeroloop.store.queries import breakers as queries

declare("zeroloop.cluster.breakers", emits=("CIRCUIT_OPENED", "CIRCUIT_CLOSED"))


class BreakerState(StrEnum):
    """A circuit's state; the values are what the `circuit_breakers.state` column holds."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


_EDGES: dict[BreakerState, frozenset[BreakerState]] = {
    BreakerState.CLOSED: frozenset({BreakerState.OPEN}),  # failures reached the threshold
    BreakerState.OPEN: frozenset({BreakerState.HALF_OPEN}),  # the recovery time passed
    # Trials succeeded (closed) or one failed (open again).
    BreakerState.HALF_OPEN: frozenset({BreakerState.CLOSED, BreakerState.OPEN}),
}


def transition(current: BreakerState, target: BreakerState, *, key: str = "breaker") -> BreakerState:
    """Return `target` if `current -> target` is legal; raise ZeroloopError otherwise."""
    if target not in _EDGES[current]:
        raise ZeroloopError(f"circuit {key}: illegal state change {current} -> {target}")
    return target


def node_key(node_id: str) -> str:
    """The breaker key of a node."""
    return f"node:{node_id}"


def stage_key(stage: str) -> str:
    """The breaker key of a pipeline stage."""
    return f"stage:{stage}"


@dataclass(frozen=True)
class Breaker:
    """One circuit (times: epoch seconds)."""

    key: str
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    successes: int = 0
    opened_at: float | None = None
    updated_at: float = 0.0

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Breaker:
        """A breaker from its table row."""
        return cls(
            row["key"],
            BreakerState(row["state"]),
            row["failures"],
            row["successes"],
            row["opened_at"],
            row["updated_at"],
        )

    def row(self) -> dict[str, Any]:
        """This breaker as a table row."""
        return {
            "key": self.key,
            "state": self.state.value,
            "failures": self.failures,
            "successes": self.successes,
            "opened_at": self.opened_at,
            "updated_at": self.updated_at,
        }


def _move(breaker: Breaker, target: BreakerState, now: float, **changes: Any) -> Breaker:
    transition(breaker.state, target, key=breaker.key)
    return replace(breaker, state=target, updated_at=now, **changes)


def refreshed(breaker: Breaker, now: float, settings: HealthSettings) -> Breaker:
    """OPEN becomes HALF_OPEN once `breaker_recovery_s` seconds have passed since it opened."""
    if breaker.state is BreakerState.OPEN and now - (breaker.opened_at or 0.0) >= settings.breaker_recovery_s:
        return _move(breaker, BreakerState.HALF_OPEN, now, successes=0)
    return breaker


def after_failure(breaker: Breaker, now: float, settings: HealthSettings) -> Breaker:
    """The breaker after one failure."""
    breaker = refreshed(breaker, now, settings)
    failures = breaker.failures + 1
    if breaker.state is BreakerState.HALF_OPEN or (
        breaker.state is BreakerState.CLOSED and failures >= settings.breaker_failure_threshold
    ):
        return _move(breaker, BreakerState.OPEN, now, failures=failures, successes=0, opened_at=now)
    return replace(breaker, failures=failures, updated_at=now)


def after_success(breaker: Breaker, now: float, settings: HealthSettings) -> Breaker:
    """The breaker after one success."""
    breaker = refreshed(breaker, now, settings)
    if breaker.state is BreakerState.HALF_OPEN:
        successes = breaker.successes + 1
        if successes >= settings.breaker_half_open_successes:
            return _move(breaker, BreakerState.CLOSED, now, failures=0, successes=0, opened_at=None)
        return replace(breaker, successes=successes, updated_at=now)
    if breaker.state is BreakerState.CLOSED:
        return replace(breaker, failures=0, updated_at=now)
    return breaker  # a late success while open changes nothing: the recovery time decides


def allows(breaker: Breaker, now: float, settings: HealthSettings) -> bool:
    """Whether work may go through now (closed, or half-open for a trial)."""
    return refreshed(breaker, now, settings).state is not BreakerState.OPEN


class CircuitBreakers:
    """Applies the breaker rules to stored circuits and publishes their transitions."""

    def __init__(self, store: Store, bus: EventBus, settings: HealthSettings, *, clock: Clock = time.time) -> None:
        self.store = store
        self.bus = bus
        self.settings = settings
        self.clock = clock

    def record_failure(self, key: str) -> BreakerState:
        """Count a failure of `key`; return the state afterwards."""
        return self._apply(key, after_failure)

    def record_success(self, key: str) -> BreakerState:
        """Count a success of `key`; return the state afterwards."""
        return self._apply(key, after_success)

    def allow(self, key: str) -> bool:
        """Whether work may go to `key` now (reads only)."""
        return allows(self.get(key), self.clock(), self.settings)

    def get(self, key: str) -> Breaker:
        """The breaker of `key` (closed if it never tripped)."""
        with self.store.read() as conn:
            row = queries.get_breaker(conn, key)
        return Breaker.from_row(row) if row else Breaker(key)

    def list_breakers(self) -> list[Breaker]:
        """Every stored breaker."""
        with self.store.read() as conn:
            return [Breaker.from_row(row) for row in queries.list_breakers(conn)]

    def refresh_all(self) -> list[str]:
        """Move every OPEN breaker past its recovery time to HALF_OPEN; return their keys."""
        with self.store.read() as conn:
            keys = [row["key"] for row in queries.list_breakers(conn, (BreakerState.OPEN.value,))]
        moved = []
        for key in keys:
            if self._apply(key, refreshed) is BreakerState.HALF_OPEN:
                moved.append(key)
        return moved

    def _apply(self, key: str, rule: Any) -> BreakerState:
        now = self.clock()
        with self.store.transaction() as conn:
            # Created if missing and locked in one go: two writers of a new breaker take turns, never collide.
            before = Breaker.from_row(queries.lock_breaker(conn, key, now=now))
            after: Breaker = rule(before, now, self.settings)
            if after != before:
                queries.upsert_breaker(conn, after.row())
            if after.state is not before.state:
                if after.state is BreakerState.OPEN:
                    self.bus.publish("CIRCUIT_OPENED", {"key": key, "failures": after.failures})
                elif after.state is BreakerState.CLOSED:
                    self.bus.publish("CIRCUIT_CLOSED", {"key": key})
        return after.state
