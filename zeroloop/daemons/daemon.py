"""What a daemon is: a named async loop with an interval, a health check and a graceful stop.

A daemon's lifecycle under the manager is the `DaemonState` machine below; `transition`
is the only way a state changes and it refuses every move the table does not list.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, runtime_checkable

from zeroloop.config import DaemonSettings, Settings
from zeroloop.errors import DaemonError, LeaseError
from zeroloop.events.consumer import is_transient

if TYPE_CHECKING:
    from zeroloop.daemons.manager import DaemonManager
    from zeroloop.daemons.records import DaemonRecordPort

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class DaemonState(StrEnum):
    """Where a supervised daemon is in its lifecycle; persisted as the value in `daemons.state`."""

    PENDING = "pending"  # known, not started yet (waiting for its layer or its dependencies)
    RUNNING = "running"
    BACKOFF = "backoff"  # crashed; restarts when its backoff delay has passed
    HELD = "held"  # not started because a dependency failed or its layer was skipped
    STANDBY = "standby"  # leader-only and this node does not hold the leader lease
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"  # crash loop, or a crash under restart policy NEVER: needs a person


_EDGES: dict[DaemonState, frozenset[DaemonState]] = {
    # A pending daemon starts, or learns it must wait (held, standby), or shutdown comes first.
    DaemonState.PENDING: frozenset(
        {DaemonState.RUNNING, DaemonState.HELD, DaemonState.STANDBY, DaemonState.STOPPED, DaemonState.FAILED}
    ),
    # A running daemon crashes (backoff or failed), is asked to stop, or ends on its own.
    DaemonState.RUNNING: frozenset(
        {DaemonState.BACKOFF, DaemonState.FAILED, DaemonState.STOPPING, DaemonState.STOPPED}
    ),
    # A backing-off daemon restarts (or fails building its instance), or is parked or stopped meanwhile.
    DaemonState.BACKOFF: frozenset(
        {
            DaemonState.RUNNING,
            DaemonState.BACKOFF,
            DaemonState.FAILED,
            DaemonState.HELD,
            DaemonState.STANDBY,
            DaemonState.STOPPED,
        }
    ),
    # Held back: starts once its dependencies run again; shutdown ends it.
    DaemonState.HELD: frozenset({DaemonState.RUNNING, DaemonState.STANDBY, DaemonState.STOPPED, DaemonState.PENDING}),
    # Standby: starts when this node becomes leader.
    DaemonState.STANDBY: frozenset({DaemonState.RUNNING, DaemonState.HELD, DaemonState.STOPPED, DaemonState.PENDING}),
    # Stopping ends as stopped (shutdown), standby (leadership lost) or held (a dependency failed).
    DaemonState.STOPPING: frozenset({DaemonState.STOPPED, DaemonState.STANDBY, DaemonState.HELD}),
    DaemonState.STOPPED: frozenset(),
    # Only an explicit reset brings a failed daemon back.
    DaemonState.FAILED: frozenset({DaemonState.PENDING, DaemonState.STOPPED}),
}


def transition(current: DaemonState, target: DaemonState, *, name: str = "daemon") -> DaemonState:
    """Return `target` if `current -> target` is a legal move; raise DaemonError otherwise."""
    if target not in _EDGES[current]:
        raise DaemonError(f"{name}: illegal state change {current} -> {target}")
    return target


class HealthState(StrEnum):
    """What a daemon says about itself in its health check."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True)
class DaemonHealth:
    """A health check's answer: a state and free-form details (JSON-serialisable)."""

    state: HealthState
    details: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Daemon(Protocol):
    """A long-running loop: runs until `stop` is set, then returns promptly (the graceful stop)."""

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set; raising means a crash the manager handles."""

    def health(self) -> DaemonHealth:
        """How the daemon is doing now; called by the manager's health loop, must not block."""


@dataclass
class Leadership:
    """Whether this process holds the leader lease, and under which fencing token; read by the manager."""

    held: bool = False
    token: int | None = None


class DaemonParts(Protocol):
    """What a daemon manager needs of its process's parts: the settings, and where daemon records go.

    Every set of parts a factory may receive extends this: `zeroloop.ports.WorkerParts`
    (what a worker may touch, over the store or over `zeroloop serve`) and
    `zeroloop.ports.AppParts` (everything the App opens, for leader-only daemons).
    """

    daemons: DaemonManager[Any] | None  # set by bootstrap when the manager starts

    @property
    def settings(self) -> Settings:
        """The process's settings."""
        ...

    @property
    def daemon_records(self) -> DaemonRecordPort:
        """Where the manager writes its daemons' rows and crash loops."""
        ...


@dataclass
class ExitRequest:
    """A daemon's request that its whole process end, and the exit status it should end with.

    The node agent asks for it when the fleet stops the node, when nobody has been able to
    hear the node for too long (the dead-man switch), or when the server refused its token.
    `zeroloop worker` waits on `requested` beside its signals: one request, one drain
    (`force`: no drain, the process ends at once). The first request wins.
    """

    code: int | None = None
    reason: str = ""
    force: bool = False
    requested: asyncio.Event = field(default_factory=asyncio.Event)

    def request(self, code: int, reason: str, *, force: bool = False) -> None:
        """Ask the process to end with `code`; later requests change nothing but `force` (a stronger one)."""
        if self.code is None:
            self.code, self.reason = code, reason
        self.force = self.force or force
        self.requested.set()


P_co = TypeVar("P_co", bound=DaemonParts, covariant=True)


@dataclass(frozen=True)
class DaemonContext(Generic[P_co]):
    """What a daemon factory receives: the parts it may use, this process's leadership, a clock (seconds), consumers.

    A factory names the parts it needs in its signature (`DaemonContext[WorkerParts]` or
    `DaemonContext[AppParts]`), so mypy refuses a worker daemon that reaches for the store.
    """

    parts: P_co
    leadership: Leadership = field(default_factory=Leadership)
    clock: Clock = time.time
    consumers: Sequence[Any] = ()  # durable event consumer specs (events.consumer.ConsumerSpec) this process runs
    exit: ExitRequest = field(default_factory=ExitRequest)  # a daemon asking its process to end


class LoopDaemon:
    """Base of interval daemons: `tick()` every `interval_s` seconds until stopped.

    A tick that raises is logged and counted; after `max_consecutive_errors` in a row
    the error propagates and the manager treats the daemon as crashed (and backs off).
    A tick that fails because the store is unavailable (`is_transient`) is no crash:
    the daemon reports DEGRADED and ticks again after a backoff with jitter (doubling
    from 0.1 s up to `outage_retry_max_s`, never longer than its interval) for as long
    as the outage lasts, then carries on by itself. A LeaseError (a fencing refusal:
    this process no longer leads) propagates at once, so the manager steps it down.
    """

    max_consecutive_errors = 3

    def __init__(self, interval_s: float, *, clock: Clock = time.time, outage_retry_max_s: float | None = None) -> None:
        """`outage_retry_max_s` (seconds) defaults to `daemons.outage_retry_max_s`."""
        self.interval_s = interval_s
        self.clock = clock
        self.outage_retry_max_s = (
            DaemonSettings().outage_retry_max_s if outage_retry_max_s is None else outage_retry_max_s
        )
        self.ticks = 0
        self.errors = 0
        self.consecutive_errors = 0
        self.last_tick_at: float | None = None
        self.last_error: str | None = None
        self.outage_since: float | None = None
        self.outage_failures = 0  # failed ticks of the current store outage
        self.tick_s = 0.0  # how long the last tick took (seconds of wall time)
        self.max_tick_s = 0.0  # the longest tick so far (seconds): one longer than interval_s falls behind

    async def tick(self) -> None:
        """One round of work; store calls go through asyncio.to_thread."""
        raise NotImplementedError

    def details(self) -> dict[str, Any]:
        """Extra health details of the concrete daemon (JSON-serialisable)."""
        return {}

    async def run_once(self) -> None:
        """Run one tick with the error accounting of `run` (tests drive daemons with this)."""
        began = time.perf_counter()
        try:
            await self.tick()
        except LeaseError:
            raise
        except Exception as exc:
            if is_transient(exc):
                self.outage_failures += 1
                if self.outage_since is None:
                    self.outage_since = self.clock()
                    log.warning("%s: store unavailable, retrying with backoff: %s", type(self).__name__, exc)
                return
            self.errors += 1
            self.consecutive_errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            if self.consecutive_errors >= self.max_consecutive_errors:
                raise
            log.warning("%s tick failed: %s", type(self).__name__, self.last_error)
        else:
            self.consecutive_errors = 0
            if self.outage_since is not None:
                log.info("%s: store back after %.1f s", type(self).__name__, self.clock() - self.outage_since)
            self.outage_since = None
            self.outage_failures = 0
        finally:
            self.ticks += 1
            self.last_tick_at = self.clock()
            self.tick_s = time.perf_counter() - began
            self.max_tick_s = max(self.max_tick_s, self.tick_s)

    def next_wait_s(self) -> float:
        """Seconds until the next tick: the interval, or a jittered backoff while the store is unavailable."""
        if self.outage_since is None:
            return self.interval_s
        backoff = min(self.outage_retry_max_s, 0.1 * 2.0 ** min(self.outage_failures, 30))
        return min(self.interval_s, backoff / 2 + random.uniform(0, backoff / 2))

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until `stop` is set; the wait between ticks ends early when it is."""
        while not stop.is_set():
            await self.run_once()
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.next_wait_s())
            except TimeoutError:
                continue

    def health(self) -> DaemonHealth:
        """Unhealthy after a failed tick; degraded while the store is down or ticks are three intervals late."""
        details: dict[str, Any] = {
            "ticks": self.ticks,
            "errors": self.errors,
            "last_error": self.last_error,
            "tick_s": round(self.tick_s, 4),
            "max_tick_s": round(self.max_tick_s, 4),
        }
        details.update(self.details())
        if self.consecutive_errors:
            return DaemonHealth(HealthState.UNHEALTHY, details)
        if self.outage_since is not None:
            details["store_unavailable_since"] = self.outage_since
            return DaemonHealth(HealthState.DEGRADED, details)
        if self.last_tick_at is not None and self.clock() - self.last_tick_at > 3 * self.interval_s:
            return DaemonHealth(HealthState.DEGRADED, details)
        return DaemonHealth(HealthState.HEALTHY, details)
