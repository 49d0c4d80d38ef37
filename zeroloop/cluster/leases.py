"""Leader and role leases with fencing tokens: expiring records in the store, no consensus of our own.

A lease is a row `(name, holder, token, expires_at)`. Acquiring a free or expired lease
increments its token; renewing keeps it; releasing frees the row but keeps the token, so
a token is never handed out twice. Every write made under a role calls `guard()` inside
its own transaction: if the presented token is no longer the current unexpired one, the
write is refused with LeaseError and rolled back. A leader paused past its lease (GC
pause, SIGSTOP, a VM freeze) therefore cannot write after it resumes: by then its token
is stale. Failover happens within one lease period of the holder's last renewal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy.engine import Connection

from zeroloop.cluster.nodes import LEADER_LEASE
from zeroloop.daemons.daemon import Clock, DaemonContext, Leadership, LoopDaemon
from zeroloop.errors import LeaseError
from zeroloop.events.bus import EventBus
from zeroloop.events.wiring import declare
from zeroloop.ports import AppParts
from zeroloop.store.database import Store
from zeroloop.store.queries import leases as queries

log = logging.getLogger(__name__)
declare("zeroloop.cluster.leases", emits=("LEADER_ELECTED", "LEADER_LOST"))

LEADER = LEADER_LEASE  # the coordinator's lease (named in cluster.nodes, whose heartbeat reads it)


class LeaseState(StrEnum):
    """A lease record read at some time: free (never taken or released), held, or expired."""

    FREE = "free"
    HELD = "held"
    EXPIRED = "expired"


def lease_state(row: dict[str, Any] | None, now: float) -> LeaseState:
    """The state of a lease row at `now` (epoch seconds)."""
    if row is None or row["holder"] is None:
        return LeaseState.FREE
    return LeaseState.HELD if row["expires_at"] > now else LeaseState.EXPIRED


@dataclass(frozen=True)
class Lease:
    """A lease as seen at one moment (expires_at: epoch seconds)."""

    name: str
    holder: str | None
    token: int
    expires_at: float
    state: LeaseState


def guard(conn: Connection, role: str, token: int, *, clock: Clock = time.time) -> None:
    """Refuse (LeaseError) a write under `role` unless `token` is the current, unexpired lease token.

    Call it inside the writer's transaction, before the write: the row is locked (FOR
    UPDATE on PostgreSQL, the write lock on SQLite), so no other holder can take the
    lease between the check and the commit. The time is read once the lock is held: a
    lease that ran out while the writer waited for it is expired.
    """
    row = queries.lock_lease(conn, role)
    moment = clock()
    if row["token"] != token or lease_state(row, moment) is not LeaseState.HELD:
        raise LeaseError(
            f"write under role {role!r} refused: token {token} is stale (current token {row['token']}, "
            f"holder {row['holder']!r}); this process no longer holds the lease"
        )


class LeaseManager:
    """Acquires, renews and releases named leases for one holder (ttl_s: lease length in seconds)."""

    def __init__(self, store: Store, bus: EventBus, *, holder: str, ttl_s: float, clock: Clock = time.time) -> None:
        self.store = store
        self.bus = bus
        self.holder = holder
        self.ttl_s = ttl_s
        self.clock = clock

    def acquire(self, role: str) -> int | None:
        """Take `role` if free or expired, or renew it if we hold it; return our token, or None if another holds it.

        The time is read once the lease row is locked, so a long wait for the lock never
        writes a lease that has already run out. On PostgreSQL a contender does not wait
        on a row another transaction holds: if the lease that transaction's holder wrote
        has expired (the holder is paused inside a transaction), its session is ended, so
        failover takes one lease, not `store.idle_in_transaction_timeout_s`.
        """
        with self.store.transaction() as conn:
            row = queries.try_lock_lease(conn, role)
            if row is None:
                row = self._depose_paused_holder(conn, role)
                if row is None:
                    return None
            now = self.clock()
            state = lease_state(row, now)
            if state is LeaseState.HELD and row["holder"] == self.holder:
                queries.extend_lease(conn, role, self.holder, row["token"], now=now, expires_at=now + self.ttl_s)
                return int(row["token"])
            if state is LeaseState.HELD:
                return None
            token = int(row["token"]) + 1
            queries.write_lease(
                conn, role, holder=self.holder, token=token, expires_at=now + self.ttl_s, acquired_at=now
            )
            if state is LeaseState.EXPIRED and row["holder"] != self.holder:
                # The previous holder cannot say so itself (it died or is paused): record its loss here.
                self.bus.publish("LEADER_LOST", {"role": role, "node": row["holder"], "token": row["token"]})
            self.bus.publish("LEADER_ELECTED", {"role": role, "node": self.holder, "token": token})
        log.info("acquired lease %s with token %d", role, token)
        return token

    def renew(self, role: str, token: int) -> bool:
        """Extend our lease by ttl_s; False (and LEADER_LOST) when it is no longer ours (time read after the lock)."""
        with self.store.transaction() as conn:
            queries.lock_lease(conn, role)
            now = self.clock()
            if queries.extend_lease(conn, role, self.holder, token, now=now, expires_at=now + self.ttl_s):
                return True
        self._lost(role, token)
        return False

    def release(self, role: str, token: int) -> bool:
        """Give the lease up (keeping its token); True when we held it."""
        with self.store.transaction() as conn:
            released = queries.free_lease(conn, role, self.holder, token, now=self.clock())
            if released:
                self.bus.publish("LEADER_LOST", {"role": role, "node": self.holder, "token": token, "released": True})
        return released

    def get(self, role: str) -> Lease | None:
        """The lease of `role` as it stands now, or None if it was never taken."""
        with self.store.read() as conn:
            row = queries.get_lease(conn, role)
        if row is None:
            return None
        return Lease(role, row["holder"], int(row["token"]), float(row["expires_at"]), lease_state(row, self.clock()))

    def list_leases(self) -> list[Lease]:
        """Every lease, as it stands now."""
        now = self.clock()
        with self.store.read() as conn:
            rows = queries.list_leases(conn)
        return [
            Lease(r["name"], r["holder"], int(r["token"]), float(r["expires_at"]), lease_state(r, now)) for r in rows
        ]

    def guard(self, conn: Connection, role: str, token: int) -> None:
        """`guard()` at this manager's clock."""
        guard(conn, role, token, clock=self.clock)

    def _depose_paused_holder(self, conn: Connection, role: str) -> dict[str, Any] | None:
        """The lease row, locked, once a holder paused past its lease inside a transaction is gone; None while
        the row is held by a transaction whose lease is still good (a live holder renewing or writing).

        When the holder is this manager itself, the locking transaction is one of its own writes: it waits."""
        seen = queries.get_lease(conn, role)  # the committed row: what the locker wrote is not visible yet
        if seen is not None and seen["holder"] == self.holder:
            # Our own fenced write holds the row (its guard locks it): wait for it, bounded, and renew.
            queries.set_lock_timeout(conn, self.ttl_s)
            return queries.lock_lease(conn, role)
        if seen is None or lease_state(seen, self.clock()) is LeaseState.HELD:
            return None
        ended = queries.end_lease_lockers(conn, role)
        if not ended:
            return None  # its transaction ended meanwhile: the next round takes the lease
        log.warning(
            "lease %s expired at %.3f while %r still held its row in a transaction (paused?): ended session(s) %s",
            role,
            seen["expires_at"],
            seen["holder"],
            ended,
        )
        # The ended session releases its locks as it exits: wait for that, but never unbounded.
        queries.set_lock_timeout(conn, self.ttl_s)
        return queries.lock_lease(conn, role)

    def _lost(self, role: str, token: int) -> None:
        log.warning("lost lease %s (token %d)", role, token)
        with self.store.transaction() as conn:
            row = queries.get_lease(conn, role)
            # Publish only when nobody already reported it (a successor publishes LEADER_LOST on takeover).
            if row is not None and row["token"] == token:
                self.bus.publish("LEADER_LOST", {"role": role, "node": self.holder, "token": token})


Fence = Callable[[Connection], None]


class LeaderFence:
    """A guard for the writes of leader-only daemons; call it inside each write transaction, first.

    It refuses (LeaseError, so the transaction rolls back) unless this process holds
    `role` under the token in `leadership`, unexpired, at the lease manager's clock.
    A refusal is logged, counted in `refusals`, and clears `leadership` (when it still
    names the refused token), so the daemon manager steps every leader-only daemon of
    this process down to standby at once instead of letting each one find out alone.
    """

    def __init__(self, leases: LeaseManager, leadership: Leadership, role: str = LEADER) -> None:
        self.leases = leases
        self.leadership = leadership
        self.role = role
        self.refusals = 0

    def __call__(self, conn: Connection) -> None:
        """Refuse the transaction on `conn` unless this process still holds the lease."""
        token = self.leadership.token
        try:
            if token is None:
                raise LeaseError(f"write under role {self.role!r} refused: this process does not hold the lease")
            self.leases.guard(conn, self.role, token)
        except LeaseError as exc:
            self.refusals += 1
            if self.leadership.token == token:
                self.leadership.held = False
                self.leadership.token = None
            log.warning("fencing refused a leader-only write (refusal %d): %s", self.refusals, exc)
            raise


def leader_fence(leases: LeaseManager, leadership: Leadership, role: str = LEADER) -> LeaderFence:
    """A `LeaderFence` for writes of leader-only daemons: refuses unless this process holds `role` now."""
    return LeaderFence(leases, leadership, role)


class LeaderElector:
    """Keeps trying to hold one lease and mirrors the outcome into a `Leadership` the manager reads."""

    def __init__(self, leases: LeaseManager, leadership: Leadership, role: str = LEADER) -> None:
        self.leases = leases
        self.leadership = leadership
        self.role = role

    def tick(self) -> bool:
        """Acquire or renew; return whether we hold the lease now."""
        token = self.leases.acquire(self.role)
        self.leadership.held = token is not None
        self.leadership.token = token
        return self.leadership.held

    def resign(self) -> None:
        """Release the lease if held (graceful shutdown), so a successor need not wait for expiry."""
        if self.leadership.token is not None:
            self.leases.release(self.role, self.leadership.token)
        self.leadership.held = False
        self.leadership.token = None


class LeaderElectionDaemon(LoopDaemon):
    """Ticks the elector every third of a lease period, and resigns on a graceful stop."""

    def __init__(self, elector: LeaderElector, interval_s: float, *, clock: Clock = time.time) -> None:
        super().__init__(interval_s, clock=clock)
        self.elector = elector

    async def tick(self) -> None:
        """Acquire or renew the leader lease."""
        try:
            await asyncio.to_thread(self.elector.tick)
        except Exception:
            # An unreachable store means we cannot prove we lead: stop leading at once.
            self.elector.leadership.held = False
            raise

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until stopped, then release the lease."""
        try:
            await super().run(stop)
        finally:
            self.elector.leadership.held = False
            await asyncio.to_thread(self.elector.resign)

    def details(self) -> dict[str, Any]:
        """Whether this node leads, and under which token."""
        return {"leader": self.elector.leadership.held, "token": self.elector.leadership.token}


def leader_election_daemon(context: DaemonContext[AppParts]) -> LeaderElectionDaemon:
    """Factory of the `leader_election` daemon."""
    app = context.parts
    elector = LeaderElector(app.leases, context.leadership)
    return LeaderElectionDaemon(elector, app.settings.cluster.leader_lease_s / 3.0, clock=context.clock)
