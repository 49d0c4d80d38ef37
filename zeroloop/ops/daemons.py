"""The operations daemons: disk space on every node; store upkeep, retention and backups on the leader.

| daemon | where | what |
| --- | --- | --- |
| disk_space | every node | evicts the artifact cache past the soft disk limit, refuses selfplay past the hard one |
| maintenance | leader | PRAGMA optimize / VACUUM (SQLite) or ANALYZE (PostgreSQL), consolidation, garbage collection |
| backup | leader | a backup every `backup.interval_s`, a snapshot every `backup.continuous_interval_s` |
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from zeroloop.cluster.leases import leader_fence
from zeroloop.daemons.daemon import Clock, DaemonContext, LoopDaemon
from zeroloop.errors import EvacuationError, LeaseError, OperationsError
from zeroloop.events.consumer import is_transient
from zeroloop.events.wiring import declare
from zeroloop.ops.backup import CONTINUOUS, DAILY_LABELS, BackupInfo, Backups
from zeroloop.ops.consolidate import Consolidator
from zeroloop.ops.gc import GarbageCollector
from zeroloop.ops.maintenance import DiskSpaceManager, Schedule, disk_reader, optimize_store
from zeroloop.ports import AppParts, WorkerParts

log = logging.getLogger(__name__)

declare("zeroloop.ops.daemons", emits=("BACKUP_CREATED",))

IDLE_TICK_S = 3600.0  # how often a daemon whose work is switched off looks again (seconds)
LONGEST_TICK_S = 600.0  # leader tasks are checked at least this often, whatever their interval (seconds)


class DiskSpaceDaemon(LoopDaemon):
    """Checks this node's disks every `maintenance.disk_interval_s` seconds, and uploads what it holds.

    An output held on this node because the artifact location refused it (full, or its
    endpoint down) is uploaded again on every tick (`evacuate`), not only when the node
    drains; one that still fails stays held for the next tick.
    """

    def __init__(
        self,
        manager: DiskSpaceManager,
        interval_s: float,
        *,
        clock: Clock,
        evacuate: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(interval_s, clock=clock)
        self.manager = manager
        self.evacuate = evacuate
        self.last_pct: float | None = None
        self.uploaded_held = 0
        self.evacuation_error: str | None = None

    async def tick(self) -> None:
        """One check: evict, refuse, announce as needed; then upload what this node holds."""
        check = await asyncio.to_thread(self.manager.check)
        self.last_pct = check.after_pct
        if self.evacuate is not None:
            try:
                self.uploaded_held += await asyncio.to_thread(self.evacuate)
            except EvacuationError as exc:  # each failure was logged; they stay held for the next tick
                self.uploaded_held += exc.moved
                self.evacuation_error = str(exc)
            else:
                self.evacuation_error = None

    def details(self) -> dict[str, Any]:
        """Disk use (%), cache bytes evicted so far, whether selfplay is refused, held outputs uploaded."""
        return {
            "disk_pct": self.last_pct,
            "evicted_bytes": self.manager.evicted_bytes,
            "selfplay_refused": self.manager.refused,
            "uploaded_held": self.uploaded_held,
            **({"evacuation_error": self.evacuation_error} if self.evacuation_error else {}),
        }


def disk_space_daemon(context: DaemonContext[WorkerParts]) -> DiskSpaceDaemon:
    """Factory of `disk_space`."""
    app = context.parts
    settings = app.settings
    manager = DiskSpaceManager(
        settings,
        app.artifacts.cache,
        app.bus,
        node=settings.cluster.node_id,
        read=disk_reader(settings.disk_paths),
    )
    interval_s = settings.maintenance.disk_interval_s
    return DiskSpaceDaemon(manager, interval_s, clock=context.clock, evacuate=app.artifacts.evacuate)


class MaintenanceDaemon(LoopDaemon):
    """On the leader: store upkeep, consolidation and garbage collection, each when its interval has passed."""

    def __init__(self, context: DaemonContext[AppParts], schedule: Schedule) -> None:
        app = context.parts
        ops = app.settings.maintenance
        intervals = [ops.store_interval_s, ops.consolidate_interval_s, app.settings.retention.interval_s]
        active = [interval for interval in intervals if interval > 0]
        super().__init__(min([*active, LONGEST_TICK_S]) if active else IDLE_TICK_S, clock=context.clock)
        self.app = app
        self.schedule = schedule
        self.fence = leader_fence(app.leases, context.leadership)
        self.collector = GarbageCollector(
            app.store, app.bus, app.artifacts, app.settings, clock=context.clock, fence=self.fence
        )
        self.consolidator = Consolidator(app.store, app.artifacts, app.settings, clock=context.clock, fence=self.fence)
        self.ran: dict[str, int] = {"store": 0, "vacuum": 0, "consolidate": 0, "gc": 0}
        self.last_gc: dict[str, int] = {}
        self.failures: dict[str, str] = {}  # task -> its last error, until it runs again

    async def tick(self) -> None:
        """Run what is due."""
        await asyncio.to_thread(self.run_due)

    def run_due(self) -> list[str]:
        """Run every task whose interval has passed, each apart from the others; return the names of those that ran.

        A task that fails does not keep the others from running (a failing consolidation must
        not stop the collection that frees space): its error is kept in the details, it is tried
        again at its next interval, and OperationsError names it once the others have run. A
        fencing refusal or a store outage stops the pass at once (nothing else could commit).
        """
        maintenance, ran = self.app.settings.maintenance, []
        vacuum = self.app.store.backend == "sqlite" and self.schedule.due("vacuum", maintenance.vacuum_interval_s)
        tasks: list[tuple[str, bool, Callable[[], Any]]] = [
            ("store", vacuum or self.schedule.due("store", maintenance.store_interval_s), lambda: self._upkeep(vacuum)),
            ("consolidate", self.schedule.due("consolidate", maintenance.consolidate_interval_s), self._consolidate),
            ("gc", self.schedule.due("gc", self.app.settings.retention.interval_s), self._collect),
        ]
        failed: dict[str, str] = {}
        for task, due, run in tasks:
            if not due:
                continue
            try:
                run()
            except LeaseError:
                raise
            except Exception as exc:
                if is_transient(exc):
                    raise
                failed[task] = f"{type(exc).__name__}: {exc}"
                log.error("maintenance: %s failed (the other tasks run): %s", task, failed[task], exc_info=exc)
            else:
                ran.append(task)
                if task == "store" and vacuum:
                    ran.append("vacuum")
                    self.schedule.done("vacuum")
                self.failures.pop(task, None)
            self.schedule.done(task)  # tried: the next try comes at the next interval
        for task in ran:
            self.ran[task] += 1
        self.failures.update(failed)
        if failed:
            raise OperationsError(
                "maintenance: "
                + "; ".join(f"{task} failed ({why})" for task, why in failed.items())
                + (f"; {', '.join(ran)} ran" if ran else "")
            )
        return ran

    def _upkeep(self, vacuum: bool) -> None:
        with self.app.store.transaction() as conn:
            self.fence(conn)  # a deposed leader leaves the store alone
        optimize_store(self.app.store, vacuum=vacuum)

    def _consolidate(self) -> None:
        self.consolidator.run()

    def _collect(self) -> None:
        self.last_gc = self.collector.collect().counts()

    def details(self) -> dict[str, Any]:
        """How often each task ran in this process, what the last collection deleted, and tasks failing now."""
        return {
            "ran": dict(self.ran),
            "last_gc": self.last_gc,
            "failing": dict(self.failures),
            "fence_refusals": self.fence.refusals,
        }


def maintenance_daemon(context: DaemonContext[AppParts]) -> MaintenanceDaemon:
    """Factory of `maintenance`."""
    schedule = Schedule(context.parts.settings.data_dir / "maintenance.json", context.clock)
    return MaintenanceDaemon(context, schedule)


class BackupDaemon(LoopDaemon):
    """On the leader: a backup whenever the newest is `backup.interval_s` old, pruned to `backup.keep`, and a
    continuous snapshot whenever the newest is `backup.continuous_interval_s` old, pruned to `backup.continuous_keep`.

    The continuous snapshots bound what losing the store costs (its recovery point objective):
    at most `continuous_interval_s` plus the time one snapshot takes.
    """

    def __init__(self, context: DaemonContext[AppParts]) -> None:
        app = context.parts
        backup = app.settings.backup
        active = [interval for interval in (backup.interval_s, backup.continuous_interval_s) if interval > 0]
        super().__init__(min([*active, LONGEST_TICK_S]) if active else IDLE_TICK_S, clock=context.clock)
        self.app = app
        self.fence = leader_fence(app.leases, context.leadership)
        self.backups = Backups(app.settings, app.store, clock=context.clock)
        self.started_at = context.clock()
        self.taken = 0
        self.last_id: str | None = None
        self.snapshots = 0
        self.last_snapshot: str | None = None

    async def tick(self) -> None:
        """Take what is due."""
        await asyncio.to_thread(self.run_due)

    def run_due(self) -> str | None:
        """Take a continuous snapshot and a backup when each is due; return the backup's id, or None."""
        self.run_continuous()
        backup = self.app.settings.backup
        info = self._take_if_due("", backup.interval_s, backup.keep, DAILY_LABELS)
        if info is None:
            return None
        self.taken += 1
        self.last_id = info.id
        return info.id

    def run_continuous(self) -> str | None:
        """Take a continuous snapshot when the newest is `backup.continuous_interval_s` old; its id, or None."""
        backup = self.app.settings.backup
        info = self._take_if_due(CONTINUOUS, backup.continuous_interval_s, backup.continuous_keep, (CONTINUOUS,))
        if info is None:
            return None
        self.snapshots += 1
        self.last_snapshot = info.id
        return info.id

    def _take_if_due(self, label: str, interval_s: float, keep: int, labels: tuple[str, ...]) -> BackupInfo | None:
        if interval_s <= 0:
            return None
        found = [info for info in self.backups.ls() if info.label in labels]
        # With none yet, the first is due one interval after this daemon started: a short run takes none.
        last = max((info.created_at for info in found if info.label == label), default=self.started_at)
        if self.clock() - last < interval_s:
            return None
        with self.app.store.transaction() as conn:
            self.fence(conn)
        info = self.backups.create(label=label)
        pruned = self.backups.prune(keep, labels=labels)
        if label == "":  # the frequent snapshots are not announced one by one
            with self.app.store.transaction() as conn:
                self.fence(conn)
                self.app.bus.publish(
                    "BACKUP_CREATED",
                    {
                        "backup_id": info.id,
                        "store_bytes": info.store_bytes,
                        "artifacts": info.artifacts,
                        "pruned": pruned,
                    },
                )
        return info

    def details(self) -> dict[str, Any]:
        """Backups and continuous snapshots taken by this process, the last of each."""
        return {
            "taken": self.taken,
            "last": self.last_id,
            "snapshots": self.snapshots,
            "last_snapshot": self.last_snapshot,
            "fence_refusals": self.fence.refusals,
        }


def backup_daemon(context: DaemonContext[AppParts]) -> BackupDaemon:
    """Factory of `backup`."""
    return BackupDaemon(context)
