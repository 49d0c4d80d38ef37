"""Upkeep: a node's disk space, the store's statistics and file, and when each periodic task is due.

Disk space (every node): past `queue.disk_soft_pct` the artifact cache is evicted, least
recently used first, until the disk is below it again or the cache is empty; every
artifact in it has a copy at the artifact location, so nothing is lost. If the disk is
still past `queue.disk_hard_pct`, the node claims no new selfplay until it is back below
the soft limit (its own `NodePressure`, zeroloop.queue.backpressure: a node's readings
stay on the node and never enter the cluster's backpressure). DISK_SPACE_LOW says so once
per episode, and DISK_SPACE_RECOVERED when the disk is back below the soft limit, which
closes the node's circuit breaker if the full disk opened it: a transient full disk no
longer idles the node for `health.breaker_recovery_s`.

Store upkeep (the leader): SQLite `PRAGMA optimize`, and `VACUUM` less often (it rewrites
the file and holds the write lock meanwhile); PostgreSQL `ANALYZE` (autovacuum does the rest).
When each task last ran is kept in `<data_dir>/maintenance.json`, so a restarted
coordinator keeps the schedule.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from zeroloop.artifacts.cache import LocalCache
from zeroloop.config import Settings
from zeroloop.events.wiring import declare
from zeroloop.ports import EventPort
from zeroloop.store.database import Store

log = logging.getLogger(__name__)

declare("zeroloop.ops.maintenance", emits=("DISK_SPACE_LOW", "DISK_SPACE_RECOVERED"))

DiskReader = Callable[[], float]  # percent of the fullest data disk in use, 0-100


def disk_reader(paths: Path | Sequence[Path]) -> DiskReader:
    """A reader of the use (%) of the fullest disk holding one of `paths` (each, or its nearest existing parent):
    the data directory and an artifact location on a mount of its own (`Settings.disk_paths`) fill apart."""
    watched = [paths] if isinstance(paths, Path) else list(paths)

    def read() -> float:
        fullest = 0.0
        for path in watched:
            where = path
            while not where.exists() and where != where.parent:
                where = where.parent
            usage = shutil.disk_usage(where)
            fullest = max(fullest, 100.0 * usage.used / usage.total if usage.total else 0.0)
        return fullest

    return read


@dataclass(frozen=True)
class DiskCheck:
    """One disk check: use before and after (%), cache bytes evicted, and whether selfplay is refused."""

    disk_pct: float
    after_pct: float
    evicted_bytes: int
    selfplay_refused: bool


class DiskSpaceManager:
    """Keeps a node's data disk usable: the cache goes first, then new selfplay is refused."""

    def __init__(
        self,
        settings: Settings,
        cache: LocalCache,
        bus: EventPort,
        *,
        node: str,
        read: DiskReader,
    ) -> None:
        self.queue_settings = settings.queue
        self.cache = cache
        self.bus = bus
        self.node = node
        self.read = read
        self.low = False
        self.refused = False
        self.evicted_bytes = 0

    def check(self) -> DiskCheck:
        """Read the disk; evict the cache past the soft limit; refuse selfplay past the hard one."""
        soft, hard = self.queue_settings.disk_soft_pct, self.queue_settings.disk_hard_pct
        before = self.read()
        evicted = 0
        if before >= soft:
            evicted = self.cache.evict_until(lambda: self.read() < soft)
            self.evicted_bytes += evicted
        after = self.read() if evicted else before
        refused = after >= hard or (self.refused and after >= soft)  # as the node's own pressure judges it
        low = before >= soft
        if low and (not self.low or (refused and not self.refused)):
            payload = {"node": self.node, "disk_pct": round(before, 1), "evicted_bytes": evicted}
            self.bus.publish("DISK_SPACE_LOW", {**payload, "selfplay_refused": refused})
            log.warning("disk %.0f%% full on %s: %d bytes of cache evicted", before, self.node, evicted)
        elif self.low and after < soft:
            self.bus.publish("DISK_SPACE_RECOVERED", {"node": self.node, "disk_pct": round(after, 1)})
            log.info("disk back to %.0f%% on %s", after, self.node)
            low = False
        self.low, self.refused = low, refused
        return DiskCheck(before, after, evicted, refused)


def optimize_store(store: Store, *, vacuum: bool) -> list[str]:
    """Refresh the store's planner statistics (and on SQLite, when asked, rewrite its file); return what ran."""
    if store.backend == "postgresql":
        with store.transaction() as conn:
            conn.execute(sa.text("ANALYZE"))
        return ["ANALYZE"]
    done = ["PRAGMA optimize"] + (["VACUUM"] if vacuum else [])
    with store.engine.connect() as conn:
        # The driver's own connection is in autocommit (see Store): VACUUM must run outside a transaction.
        driver = conn.connection.dbapi_connection
        assert driver is not None
        for statement in done:
            driver.execute(statement)
    return done


class Schedule:
    """When each periodic task last ran (epoch seconds), kept in a small JSON file; a new task starts its clock now."""

    def __init__(self, path: Path, clock: Callable[[], float]) -> None:
        self.path = path
        self.clock = clock
        try:
            self.last: dict[str, float] = {k: float(v) for k, v in json.loads(path.read_text()).items()}
        except (OSError, ValueError, AttributeError):
            self.last = {}

    def due(self, task: str, interval_s: float) -> bool:
        """Whether `task` should run now (never when `interval_s` is 0)."""
        if interval_s <= 0:
            return False
        now = self.clock()
        if task not in self.last:
            self.done(task, now)  # a task first seen starts its clock; it runs one interval from now
            return False
        return now - self.last[task] >= interval_s

    def done(self, task: str, at: float | None = None) -> None:
        """Record that `task` ran now (or at `at`)."""
        self.last[task] = self.clock() if at is None else at
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temp = self.path.with_name(self.path.name + ".part")
            temp.write_text(json.dumps(self.last, sort_keys=True))
            temp.replace(self.path)
        except OSError as exc:  # a full disk must not stop upkeep; the schedule is only kept in memory meanwhile
            log.warning("cannot write %s: %s", self.path, exc)
