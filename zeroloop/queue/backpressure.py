"""Backpressure: how hard producers should slow down, from queue depth and this node's resources.

The level is the worst of three readings, each mapped by `level_for` (see docs/queue.md):
the queued depth of one job type against `queue.soft_limit`/`hard_limit`, and this
node's memory and data-disk use against their soft and hard percentages. The last level
per queue type is kept in the store, so a change is announced once (BACKPRESSURE_CHANGED)
however many processes check it.
"""

from __future__ import annotations

import enum
import math
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
    """One reading of this node's resources (percent used, 0-100)."""

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


def compute_level(depth: int, resources: Resources, settings: QueueSettings) -> BackpressureLevel:
    """The backpressure level for a queue holding `depth` queued jobs on a node with `resources`."""
    return max(
        level_for(depth, settings.soft_limit, settings.hard_limit, low_from=settings.soft_limit / 2),
        level_for(resources.memory_pct, settings.memory_soft_pct, settings.memory_hard_pct),
        level_for(resources.disk_pct, settings.disk_soft_pct, settings.disk_hard_pct),
    )


class BackpressureMonitor:
    """Computes the level of a queue type and announces each change once across all processes."""

    def __init__(
        self,
        store: Store,
        bus: EventBus,
        settings: QueueSettings,
        *,
        resources: ResourceReader,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.bus = bus
        self.settings = settings
        self.resources = resources
        self.clock = clock

    def check(self, queue_type: str) -> BackpressureLevel:
        """The current level of `queue_type`; when it differs from the recorded one, record and publish the change."""
        with self.store.read() as conn:
            depth = queries.queued_depth(conn, queue_type, at_most=self.settings.hard_limit)
            recorded = queries.get_backpressure(conn, queue_type)
        level = compute_level(depth, self.resources(), self.settings)
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
