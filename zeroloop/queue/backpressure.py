"""Backpressure: how hard producers should slow down. The cluster's reading and each node's are kept apart.

The cluster's level per job type comes from its queued depth against `queue.soft_limit`
and `hard_limit` (`level_for`, see docs/queue.md), computed wherever a producer asks and
kept in the store, so a change is announced once (BACKPRESSURE_CHANGED) however many
processes check it. Node readings never enter it: a worker's full disk is that worker's
business, and a coordinator with a quiet disk must not erase it (they once shared one
last-writer-wins row, and the level flapped).

Each node acts on its own readings instead (`NodePressure`): its memory and data-disk
use against `queue.memory_*_pct` and `queue.disk_*_pct`. Past a hard limit the node claims
no more of the work that fills them (selfplay, which writes game batches), and takes it up
again only once every reading is back below its soft limit, so a disk hovering at the
hard limit does not flap between claiming and refusing.
"""

from __future__ import annotations

import enum
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from zeroloop.config import QueueSettings
from zeroloop.events.bus import EventBus
from zeroloop.events.catalogue import BackpressureChanged
from zeroloop.store.database import Store
from zeroloop.store.queries import jobs as queries


class BackpressureLevel(enum.IntEnum):
    """How much a producer should hold back, from NONE to STOP (refuse new jobs)."""

    NONE = 0
    LOW = 1
    SOFT = 2
    MEDIUM = 3
    HARD = 4
    HIGH = 5
    CRITICAL = 6
    STOP = 7


@dataclass(frozen=True)
class Resources:
    """One reading of a node's resources (percent used, 0-100)."""

    memory_pct: float
    disk_pct: float


ResourceReader = Callable[[], Resources]


def psutil_reader(disk_paths: Path | Sequence[Path]) -> ResourceReader:
    """A reader of this machine's memory use and the use of the fullest disk holding one of `disk_paths` (each, or
    its nearest existing parent): the data directory and a separately mounted artifact location fill apart."""
    paths = [disk_paths] if isinstance(disk_paths, Path) else list(disk_paths)

    def read() -> Resources:
        return Resources(memory_pct=psutil.virtual_memory().percent, disk_pct=fullest_disk_pct(paths))

    return read


def fullest_disk_pct(paths: Sequence[Path]) -> float:
    """Use (%) of the fullest disk holding one of `paths` (each, or its nearest existing parent)."""
    fullest = 0.0
    for path in paths:
        where = path
        while not where.exists() and where != where.parent:
            where = where.parent
        fullest = max(fullest, psutil.disk_usage(str(where)).percent)
    return fullest


# The levels between the soft and the hard limit, in equal bands.
_BANDS = (BackpressureLevel.SOFT, BackpressureLevel.MEDIUM, BackpressureLevel.HARD, BackpressureLevel.HIGH,
          BackpressureLevel.CRITICAL)  # fmt: skip


def level_for(value: float, soft: float, hard: float, *, low_from: float | None = None) -> BackpressureLevel:
    """Map a reading to a level: STOP at `hard`, five equal bands SOFT..CRITICAL from `soft`, LOW from `low_from`."""
    if value >= hard:
        return BackpressureLevel.STOP
    if value >= soft:
        band = math.floor(len(_BANDS) * (value - soft) / (hard - soft)) if hard > soft else len(_BANDS) - 1
        return _BANDS[min(band, len(_BANDS) - 1)]
    if low_from is not None and value >= low_from:
        return BackpressureLevel.LOW
    return BackpressureLevel.NONE


def compute_level(depth: int, settings: QueueSettings) -> BackpressureLevel:
    """The cluster's backpressure level for a queue holding `depth` queued jobs."""
    return level_for(depth, settings.soft_limit, settings.hard_limit, low_from=settings.soft_limit / 2)


def resource_level(resources: Resources, settings: QueueSettings) -> BackpressureLevel:
    """One node's level from its own readings: the worse of memory and data disk."""
    return max(
        level_for(resources.memory_pct, settings.memory_soft_pct, settings.memory_hard_pct),
        level_for(resources.disk_pct, settings.disk_soft_pct, settings.disk_hard_pct),
    )


class NodePressure:
    """This node's own backpressure, from its memory and data-disk readings, with hysteresis; thread-safe.

    Readings are taken at most every `max_age_s` seconds (claims ask often; statvfs and
    /proc/meminfo are cheap, but not free).
    """

    def __init__(
        self,
        settings: QueueSettings,
        read: ResourceReader,
        *,
        producers: frozenset[str],
        max_age_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`producers`: the job types that fill a node's disk and memory with new data (selfplay)."""
        self.settings = settings
        self.read = read
        self.producers = producers
        self.max_age_s = max_age_s
        self.clock = clock
        self.stopped = False  # past a hard limit, and not yet back below every soft one
        self.last: Resources | None = None
        self._read_at = -math.inf
        self._lock = threading.Lock()

    def level(self) -> BackpressureLevel:
        """The node's level now: STOP from a hard limit until every reading is back below its soft limit."""
        with self._lock:
            now = self.clock()
            if self.last is None or now - self._read_at >= self.max_age_s:
                self.last, self._read_at = self.read(), now
                found = resource_level(self.last, self.settings)
                if found >= BackpressureLevel.STOP:
                    self.stopped = True
                elif self.stopped and found < BackpressureLevel.SOFT:
                    self.stopped = False
            found = resource_level(self.last, self.settings)
            return BackpressureLevel.STOP if self.stopped else found

    def claimable(self, job_types: tuple[str, ...]) -> tuple[str, ...]:
        """The job types this node may claim now: no producer while it is at STOP."""
        if self.level() < BackpressureLevel.STOP:
            return job_types
        return tuple(job_type for job_type in job_types if job_type not in self.producers)


class BackpressureMonitor:
    """Computes the cluster's level of a queue type from its depth and announces each change once."""

    def __init__(
        self, store: Store, bus: EventBus, settings: QueueSettings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.bus = bus
        self.settings = settings
        self.clock = clock

    def check(self, queue_type: str) -> BackpressureLevel:
        """The current level of `queue_type`; when it differs from the recorded one, record and publish the change."""
        with self.store.read() as conn:
            depth = queries.queued_depth(conn, queue_type, at_most=self.settings.hard_limit)
            recorded = queries.get_backpressure(conn, queue_type)
        level = compute_level(depth, self.settings)
        if recorded == level.name:
            return level
        with self.store.transaction() as conn:
            # Re-read under the lock: another process may have recorded this very change meanwhile.
            now = self.clock()
            previous = queries.lock_backpressure(conn, queue_type, initial=BackpressureLevel.NONE.name, now=now)
            queries.set_backpressure(conn, queue_type, level=level.name, depth=depth, now=now)
            if previous != level.name:
                self.bus.publish(
                    "BACKPRESSURE_CHANGED",
                    BackpressureChanged(queue_type=queue_type, level=level.name, previous=previous, depth=depth),
                )
        return level

    def recorded(self, queue_type: str) -> BackpressureLevel:
        """The level last recorded for `queue_type` (NONE if never checked)."""
        with self.store.read() as conn:
            name = queries.get_backpressure(conn, queue_type)
        return BackpressureLevel[name] if name else BackpressureLevel.NONE
