"""The composition root: `App(settings)` opens and closes everything, and is passed down.

There are no module-level singletons in zeroloop. Whatever needs the store, the bus or
the queue receives the App (or the one part it needs) through its constructor.
"""

from __future__ import annotations

import logging
import os
from types import TracebackType

from zeroloop.artifacts.repository import Artifacts
from zeroloop.cluster.breakers import CircuitBreakers
from zeroloop.cluster.health import HealthMonitor
from zeroloop.cluster.leases import LeaseManager
from zeroloop.cluster.nodes import NodeRegistry
from zeroloop.config import Settings
from zeroloop.daemons.manager import DaemonManager
from zeroloop.daemons.records import DaemonRecords
from zeroloop.events.bus import EventBus
from zeroloop.pipeline.registry import ModelRegistry
from zeroloop.queue.manager import JobQueue
from zeroloop.store import migrate
from zeroloop.store.database import Store

log = logging.getLogger(__name__)


class App:
    """Everything one zeroloop process has open, in the order it opens and closes it."""

    def __init__(self, settings: Settings, *, source: str = "zeroloop", upgrade: bool | None = None) -> None:
        """Open the store; upgrade an embedded store's schema when settings allow, else require it current.

        `source` names this process in the events it publishes. `upgrade` overrides the
        setting: True always upgrades, False never does.
        """
        self.settings = settings
        self.store = Store(settings.store_url, settings.store)
        try:
            auto = settings.store.auto_upgrade and self.store.backend == "sqlite"
            if upgrade if upgrade is not None else auto:
                before = migrate.upgrade(self.store)
                if not before.up_to_date:
                    log.info("store schema upgraded from %s to %s", before.current, before.head)
            else:
                migrate.require_current(self.store)
        except BaseException:
            self.store.close()
            raise
        self.bus = EventBus(self.store, node=settings.cluster.node_id, source=source)
        self.queue = JobQueue(self.store, self.bus, settings)
        cluster = settings.cluster
        # A holder names this process, not just the machine: two processes on one node must not share a lease.
        self.leases = LeaseManager(
            self.store, self.bus, holder=f"{cluster.node_id}/{os.getpid()}", ttl_s=cluster.leader_lease_s
        )
        self.nodes = NodeRegistry(self.store, self.bus)
        self.breakers = CircuitBreakers(self.store, self.bus, settings.health)
        self.health = HealthMonitor(self.store, settings.health, daemon_fresh_s=3 * settings.daemons.health_interval_s)
        self.artifacts = Artifacts(
            self.store,
            self.bus,
            url=settings.artifacts_url,
            cache_dir=settings.data_dir / "cache",
            cache_max_bytes=settings.artifacts.cache_max_bytes,
            bandwidth_bytes_per_s=settings.artifacts.bandwidth_limit_bytes_per_s,
            node=cluster.node_id,
        )
        self.registry = ModelRegistry(self.store, self.bus)
        self.daemon_records = DaemonRecords(self.store, self.bus)
        self.daemons: DaemonManager | None = None  # set by bootstrap.initialize_all_coordinators

    def close(self) -> None:
        """Close everything this App opened, in reverse order."""
        self.store.close()

    def __enter__(self) -> App:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
