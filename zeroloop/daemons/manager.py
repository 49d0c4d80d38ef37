"""The daemon manager: starts a profile's daemons in dependency order and supervises them.

One `step()` is one supervision pass at the injected clock's time: it notices crashed
daemons (restart with backoff, or FAILED with a DAEMON_CRASH_LOOP event), holds back
daemons whose dependency failed, starts leader-only daemons only while this process
holds the leader lease (and stops them when it loses it), runs the health checks when
due, and persists every change to the `daemons` table. `supervise()` repeats steps with
the injected sleep; `shutdown()` stops daemons in reverse dependency order, each within
the drain deadline. Store calls run in a thread so the event loop never blocks.

The supervisor outlives any failure of one pass: a pass that cannot persist (the store
is down) keeps its changes to write on the next one and the supervisor retries with a
jittered backoff up to `daemons.outage_retry_max_s`, so the `daemons` table is current
again within seconds of the store's return. A leader-only daemon that ends with a
LeaseError (a fencing refusal: a successor holds the lease) steps down to STANDBY,
not BACKOFF; the refusal is counted in its health details as `fence_refusals`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from zeroloop.config import DaemonSettings
from zeroloop.daemons.backoff import RestartTracker
from zeroloop.daemons.daemon import (
    Clock,
    Daemon,
    DaemonContext,
    DaemonHealth,
    DaemonParts,
    DaemonState,
    HealthState,
    transition,
)
from zeroloop.daemons.table import DaemonSpec, Layer, RestartPolicy, order
from zeroloop.errors import LeaseError
from zeroloop.events.catalogue import DaemonCrashLoop
from zeroloop.events.wiring import declare

log = logging.getLogger(__name__)
declare("zeroloop.daemons.manager", emits=("DAEMON_CRASH_LOOP",))

Sleep = Callable[[float], Awaitable[None]]
P = TypeVar("P", bound=DaemonParts)


@dataclass
class DaemonRecord:
    """The manager's view of one daemon (times: epoch seconds of the injected clock)."""

    spec: DaemonSpec[Any]
    tracker: RestartTracker
    state: DaemonState = DaemonState.PENDING
    reason: str | None = "waiting for its layer to start"
    admitted: bool = False
    ever_started: bool = False
    instance: Daemon | None = None
    task: asyncio.Task[None] | None = None
    stop: asyncio.Event | None = None
    started_at: float | None = None
    restart_at: float | None = None
    restarts: int = 0
    last_error: str | None = None
    health: DaemonHealth | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    fence_refusals: int = 0  # times it stepped down because fencing refused its write

    def row(self, node: str, now: float) -> dict[str, Any]:
        """This record as a `daemons` table row; health carries state, details, reason and flags."""
        details = dict(self.health.details) if self.health else {}
        if self.spec.leader_only:
            details["fence_refusals"] = self.fence_refusals
        health: dict[str, Any] = {
            "state": self.health.state.value if self.health else None,
            "details": details,
            "reason": self.reason,
            "critical": self.spec.critical,
            "leader_only": self.spec.leader_only,
            "restart_at": self.restart_at,
        }
        return {
            "node": node,
            "name": self.spec.name,
            "state": self.state.value,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "health": health,
            "started_at": self.started_at,
            "updated_at": now,
        }


class DaemonManager(Generic[P]):
    """Supervises one process's daemons; built from specs already chosen for a profile."""

    def __init__(
        self,
        specs: Sequence[DaemonSpec[P]],
        context: DaemonContext[P],
        *,
        settings: DaemonSettings | None = None,
        node: str | None = None,
        clock: Clock | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.context = context
        self.parts = context.parts
        self.settings = settings or self.parts.settings.daemons
        self.node = node or self.parts.settings.cluster.node_id
        self.clock = clock or context.clock
        self.sleep = sleep
        self.records: dict[str, DaemonRecord] = {
            spec.name: DaemonRecord(spec, RestartTracker(self.settings)) for spec in order(specs)
        }
        self.stop_order: list[str] = []
        self._dirty: set[str] = set()
        self._next_health_at = 0.0
        self._supervisor: asyncio.Task[None] | None = None
        self._supervisor_stop = asyncio.Event()
        self.failed_passes = 0  # supervision passes that failed (each retried), in total
        self.failing_since: float | None = None  # when the current run of failed passes began

    # --- starting ---------------------------------------------------------------------

    async def start_layer(self, layer: Layer) -> list[str]:
        """Admit the daemons of `layer` and start those that can start; return the names that FAILED."""
        admitted = [record for record in self.records.values() if record.spec.layer == layer]
        for record in admitted:
            record.admitted = True
            if record.state is DaemonState.PENDING:
                record.reason = "waiting for its dependencies"
        await self.step()
        return [record.spec.name for record in admitted if record.state is DaemonState.FAILED]

    async def start(self) -> None:
        """Admit and start every layer (no skipping; bootstrap does the layered start with skipping)."""
        for layer in Layer:
            await self.start_layer(layer)

    def hold(self, names: Sequence[str], reason: str) -> None:
        """Hold back daemons that have not started (their layer was skipped), saying why."""
        for name in names:
            record = self.records[name]
            if record.state is DaemonState.PENDING:
                self._move(record, DaemonState.HELD, reason)

    def reset(self, name: str) -> None:
        """Let a FAILED daemon start again with a fresh backoff (after a person fixed its cause)."""
        record = self.records[name]
        record.tracker.reset()
        self._move(record, DaemonState.PENDING, "reset by operator")

    # --- supervision ------------------------------------------------------------------

    async def step(self) -> None:
        """One supervision pass; see the module docstring."""
        now = self.clock()
        for record in self.records.values():
            if record.state is DaemonState.RUNNING and record.task is not None and record.task.done():
                self._on_exit(record, now)
        leader = self.context.leadership.held
        for record in self.records.values():
            await self._reconcile(record, now, leader)
        if now >= self._next_health_at:
            self._check_health()
            self._next_health_at = now + self.settings.health_interval_s
        await self._flush(now)

    async def supervise(self, stop: asyncio.Event) -> None:
        """Step every `supervise_interval_s` seconds (with the injected sleep) until `stop` is set."""
        failures = 0
        while not stop.is_set():
            try:
                await self.step()
            except Exception as exc:  # noqa: BLE001 - the supervisor must outlive any failure of one pass
                failures += 1
                self.failed_passes += 1
                if self.failing_since is None:
                    self.failing_since = self.clock()
                log.warning("daemon supervision pass failed (%d in a row), retrying: %s", failures, exc)
                backoff = min(
                    self.settings.outage_retry_max_s, self.settings.supervise_interval_s * 2.0 ** min(failures, 30)
                )
                await self.sleep(backoff / 2 + random.uniform(0, backoff / 2))
                continue
            if self.failing_since is not None:
                log.info("daemon supervision recovered after %.1f s", self.clock() - self.failing_since)
            failures = 0
            self.failing_since = None
            await self.sleep(self.settings.supervise_interval_s)

    def spawn_supervisor(self) -> None:
        """Run `supervise()` as a background task until `shutdown()` (or `abort()`)."""
        if self._supervisor is None:
            self._supervisor_stop.clear()
            self._supervisor = asyncio.create_task(self.supervise(self._supervisor_stop), name="daemon-manager")

    async def _end_supervisor(self) -> None:
        if self._supervisor is not None:
            self._supervisor_stop.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._supervisor), timeout=self.settings.supervise_interval_s * 4)
            except TimeoutError:
                self._supervisor.cancel()
                await asyncio.wait({self._supervisor})
            self._supervisor = None

    async def _reconcile(self, record: DaemonRecord, now: float, leader: bool) -> None:
        blocked = self._blocked_by(record)
        if record.state in (DaemonState.RUNNING, DaemonState.STOPPING):
            if blocked is not None:
                await self._stop(record, DaemonState.HELD, blocked)
            elif record.spec.leader_only and not leader:
                await self._stop(record, DaemonState.STANDBY, "this node does not hold the leader lease")
            return
        if not record.admitted or record.state in (DaemonState.FAILED, DaemonState.STOPPED):
            return
        if blocked is not None:
            if record.state is not DaemonState.HELD or record.reason != blocked:
                self._move(record, DaemonState.HELD, blocked)
            return
        if record.spec.leader_only and not leader:
            if record.state is not DaemonState.STANDBY:
                self._move(record, DaemonState.STANDBY, "this node does not hold the leader lease")
            return
        waiting = [dep for dep in record.spec.depends_on if self.records[dep].state is not DaemonState.RUNNING]
        if waiting:
            if record.state is DaemonState.PENDING:
                record.reason = f"waiting for {', '.join(waiting)}"
            return
        if record.state is DaemonState.BACKOFF and record.restart_at is not None and now < record.restart_at:
            return
        self._launch(record, now)

    def _blocked_by(self, record: DaemonRecord) -> str | None:
        """Why a dependency keeps this daemon from running (failed or itself held), or None."""
        for dep in record.spec.depends_on:
            dep_record = self.records[dep]
            if dep_record.state is DaemonState.FAILED:
                return f"dependency {dep} failed: {dep_record.last_error or dep_record.reason}"
            if dep_record.state is DaemonState.HELD:
                return f"dependency {dep} is held back: {dep_record.reason}"
        return None

    def _launch(self, record: DaemonRecord, now: float) -> None:
        name = record.spec.name
        try:
            instance = record.spec.build(self.context)
        except Exception as exc:  # noqa: BLE001 - any factory failure is this daemon's failure, recorded below
            error = f"cannot build {name}: {type(exc).__name__}: {exc}"
            log.error("%s", error)
            if not record.ever_started:
                # The first build failing is a configuration or installation error: retrying will not fix it.
                record.last_error = error
                self._move(record, DaemonState.FAILED, error)
            else:
                self._crashed(record, now, error)
            return
        record.instance = instance
        record.stop = asyncio.Event()
        record.task = asyncio.create_task(instance.run(record.stop), name=f"daemon:{name}")
        record.started_at = now
        record.restart_at = None
        record.ever_started = True
        record.health = None
        self._move(record, DaemonState.RUNNING, None)
        log.info("daemon %s started", name)

    def _on_exit(self, record: DaemonRecord, now: float) -> None:
        assert record.task is not None
        task, record.task = record.task, None
        error = None if task.cancelled() else task.exception()
        if isinstance(error, LeaseError) and record.spec.leader_only:
            self._step_down(record, error)
            return
        if error is None and record.spec.restart is not RestartPolicy.ALWAYS:
            self._move(record, DaemonState.STOPPED, "finished")
            return
        message = "returned unexpectedly" if error is None else f"{type(error).__name__}: {error}"
        log.error("daemon %s crashed: %s", record.spec.name, message, exc_info=error)
        self._crashed(record, now, message)

    def _step_down(self, record: DaemonRecord, error: LeaseError) -> None:
        """A leader-only daemon was refused by fencing: it no longer leads, so it waits in standby."""
        record.fence_refusals += 1
        leadership = self.context.leadership
        leadership.held = False
        leadership.token = None
        log.warning(
            "daemon %s stepped down to standby (fence refusal %d): %s", record.spec.name, record.fence_refusals, error
        )
        self._move(record, DaemonState.STOPPING, "stepping down")
        record.instance = None
        self._move(record, DaemonState.STANDBY, f"stepped down: {error}")

    def _crashed(self, record: DaemonRecord, now: float, message: str) -> None:
        record.last_error = message
        if record.spec.restart is RestartPolicy.NEVER:
            self._move(record, DaemonState.FAILED, "crashed; restart policy is never")
            return
        delay = record.tracker.on_crash(now, record.started_at)
        if delay is None:
            reason = (
                f"crash loop: {len(record.tracker.restarts)} restarts within "
                f"{self.settings.crash_loop_window_s:g} s; reset it after fixing the cause"
            )
            self._move(record, DaemonState.FAILED, reason)
            payload = DaemonCrashLoop(
                node=self.node, daemon=record.spec.name, restarts=record.restarts, last_error=message
            )
            record.events.append(payload.model_dump())
            return
        record.restarts += 1
        record.restart_at = now + delay
        self._move(record, DaemonState.BACKOFF, f"restarting in {delay:g} s")

    def _check_health(self) -> None:
        for record in self.records.values():
            if record.state is DaemonState.RUNNING and record.instance is not None:
                try:
                    record.health = record.instance.health()
                except Exception as exc:  # noqa: BLE001 - a broken health check is reported as unhealthy
                    record.health = DaemonHealth(HealthState.UNHEALTHY, {"error": f"health check raised: {exc}"})
            self._dirty.add(record.spec.name)

    def _move(self, record: DaemonRecord, target: DaemonState, reason: str | None) -> None:
        record.state = transition(record.state, target, name=record.spec.name)
        record.reason = reason
        self._dirty.add(record.spec.name)

    async def _flush(self, now: float) -> None:
        if not self._dirty:
            return
        records = [self.records[name] for name in sorted(self._dirty)]
        self._dirty.clear()
        rows = [record.row(self.node, now) for record in records]
        events = {record.spec.name: record.events for record in records}
        for record in records:
            record.events = []
        try:
            await asyncio.to_thread(self._write, rows, [payload for batch in events.values() for payload in batch])
        except BaseException:
            # Not written: keep every change (and its events) for the next pass.
            for record in records:
                record.events = events[record.spec.name] + record.events
                self._dirty.add(record.spec.name)
            raise

    def _write(self, rows: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
        self.parts.daemon_records.write(rows, events)

    # --- stopping ---------------------------------------------------------------------

    async def _stop(self, record: DaemonRecord, final: DaemonState, reason: str) -> None:
        """Ask one daemon to stop, wait up to the drain deadline, then cancel it."""
        task = record.task
        if record.state is DaemonState.RUNNING:
            self._move(record, DaemonState.STOPPING, reason)
        if task is not None and record.stop is not None:
            record.stop.set()
            done, _pending = await asyncio.wait({task}, timeout=self.settings.drain_deadline_s)
            if not done:
                log.warning(
                    "daemon %s did not stop within %g s; cancelling it",
                    record.spec.name,
                    self.settings.drain_deadline_s,
                )
                task.cancel()
                await asyncio.wait({task})
            if not task.cancelled() and task.exception() is not None:
                record.last_error = f"{type(task.exception()).__name__}: {task.exception()}"
        record.task = None
        record.instance = None
        self.stop_order.append(record.spec.name)
        self._move(record, final, reason)

    async def shutdown(self) -> None:
        """Stop every daemon in reverse dependency order (each within the drain deadline) and persist."""
        await self._end_supervisor()
        for record in reversed(list(self.records.values())):
            if record.state in (DaemonState.RUNNING, DaemonState.STOPPING):
                await self._stop(record, DaemonState.STOPPED, "shut down")
            elif record.state not in (DaemonState.STOPPED, DaemonState.FAILED):
                self._move(record, DaemonState.STOPPED, "shut down")
        await self._flush_at_exit()

    async def _flush_at_exit(self) -> None:
        """Persist the final states if the store allows; an unreachable store must not stop the exit."""
        try:
            await self._flush(self.clock())
        except Exception as exc:  # noqa: BLE001 - reported; the process still exits
            log.warning("final daemon states not recorded (%s): the store shows them running until they go stale", exc)

    async def abort(self) -> None:
        """Cancel every daemon at once (a second signal): no drain, state persisted as stopped."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            self._supervisor = None
        for record in self.records.values():
            if record.task is not None:
                record.task.cancel()
        tasks = [record.task for record in self.records.values() if record.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        for record in self.records.values():
            record.task = None
            if record.state is DaemonState.RUNNING:
                self._move(record, DaemonState.STOPPING, "aborted")
            if record.state not in (DaemonState.STOPPED, DaemonState.FAILED):
                self._move(record, DaemonState.STOPPED, "aborted")
        await self._flush_at_exit()

    # --- views ------------------------------------------------------------------------

    def snapshot(self) -> list[dict[str, Any]]:
        """Every daemon's state in dependency order, as plain data."""
        now = self.clock()
        return [record.row(self.node, now) for record in self.records.values()]

    def state(self, name: str) -> DaemonState:
        """The current state of one daemon."""
        return self.records[name].state
