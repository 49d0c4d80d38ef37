"""The composition root: `App(settings)` opens and closes everything, and is passed down.

There are no module-level singletons in zeroloop. Whatever needs the store, the bus or
the queue receives the App (or the one part it needs) through its constructor, typed by
the protocols of `zeroloop.ports`: no module below this one imports it. The daemon table
lives here, one declaration per daemon (`_specs`, with its factory as a callable); provider
kinds are resolved by `zeroloop.fleet.pools` (built in, `module:Class`, or an entry point).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from zeroloop.artifacts.repository import Artifacts
from zeroloop.cluster.breakers import CircuitBreakers
from zeroloop.cluster.health import HealthMonitor
from zeroloop.cluster.leases import LeaseManager
from zeroloop.cluster.nodes import Nodes
from zeroloop.config import PoolSettings, Settings
from zeroloop.daemons.manager import DaemonManager
from zeroloop.daemons.records import DaemonRecords
from zeroloop.daemons.table import DaemonSpec, DaemonTable, Layer, profiles
from zeroloop.errors import DaemonError
from zeroloop.events.bus import EventBus
from zeroloop.fleet.manager import Fleet, WorkerEnv, direct_worker_env
from zeroloop.fleet.pools import build_providers
from zeroloop.pipeline.registry import ModelRegistry
from zeroloop.ports import AppParts, WorkerParts
from zeroloop.profiles import WORKER_PROFILES
from zeroloop.queue.manager import JobQueue
from zeroloop.store import migrate
from zeroloop.store.database import Store

log = logging.getLogger(__name__)


def worker_env(settings: Settings, store: Store, clock: Callable[[], float]) -> WorkerEnv:
    """How launched workers reach the cluster: a pool with `server_url` gets a worker token per node.

    The token is made when the machine is launched and revoked when it is gone
    (`Nodes.move`); it travels in the launch's environment, never on a command line.
    """
    direct = direct_worker_env(settings)

    def env(node_id: str, pool_name: str, pool: PoolSettings) -> dict[str, str]:
        if pool.server_url is None:
            return direct(node_id, pool_name, pool)
        from zeroloop.control.tokens import Role, Tokens

        token, _row = Tokens(store, clock=clock).create(Role.WORKER, node=node_id, note=f"fleet pool {pool_name}")
        return {
            **pool.env,
            "ZEROLOOP_CLUSTER__NODE_ID": node_id,
            "ZEROLOOP_CLUSTER__POOL": pool_name,
            "ZEROLOOP_SERVER__URL": pool.server_url,
            "ZEROLOOP_SERVER__TOKEN": token,
        }

    return env


def _specs() -> tuple[tuple[DaemonSpec[WorkerParts], ...], tuple[DaemonSpec[AppParts], ...]]:
    """Every daemon zeroloop runs, declared once with its factory: the worker profiles' daemons, then the others.

    Adding a daemon is one `DaemonSpec` here (docs/daemons.md). A daemon that runs in a
    worker profile goes in the first tuple: its factory takes `DaemonContext[WorkerParts]`,
    so mypy proves it uses only what a worker behind `zeroloop serve` has. Factories are
    imported when the table is built, not when this module is, so read-only commands stay quick.
    """
    from zeroloop.alerts import activity
    from zeroloop.alerts import checks as alert_checks
    from zeroloop.cluster import agent, health, leases
    from zeroloop.daemons import adapters
    from zeroloop.fleet import autoscaler, idle
    from zeroloop.ops import daemons as ops
    from zeroloop.pipeline import daemons as pipeline
    from zeroloop.pipeline import distribution
    from zeroloop.tune import daemon as tune

    coordinator, on_workers = profiles("coordinator"), profiles(*WORKER_PROFILES)
    workers: tuple[DaemonSpec[WorkerParts], ...] = (
        DaemonSpec(
            "node_heartbeat",
            agent.node_agent_daemon,
            "registers this node (resources, GPUs, slots), heartbeats it, uploads its only copies when draining",
            on_workers,
            layer=Layer.FOUNDATIONAL,
            critical=True,
        ),
        DaemonSpec(
            "job_executor",
            pipeline.executor_daemon,
            "claims and runs selfplay, export, training and evaluation jobs, one per slot",
            profiles("training_node", "ephemeral"),
            depends_on=("node_heartbeat",),
            layer=Layer.APPLICATION,
            critical=True,
        ),
        DaemonSpec(
            "selfplay_executor",
            pipeline.selfplay_executor_daemon,
            "claims and runs selfplay jobs only, one per slot",
            frozenset({"selfplay"}),
            depends_on=("node_heartbeat",),
            layer=Layer.APPLICATION,
            critical=True,
        ),
        DaemonSpec(
            "model_distribution",
            distribution.model_distribution_daemon,
            "prefetches each promoted model into this node's artifact cache",
            on_workers,
            layer=Layer.APPLICATION,
        ),
        DaemonSpec(
            "disk_space",
            ops.disk_space_daemon,
            "evicts the artifact cache when a data disk fills, then refuses new selfplay through backpressure; "
            "uploads outputs held on this node",
            profiles("coordinator", *WORKER_PROFILES),
        ),
    )
    others: tuple[DaemonSpec[AppParts], ...] = (
        DaemonSpec(
            "leader_election",
            leases.leader_election_daemon,
            "acquires and renews the leader lease; leader-only daemons run only while it is held",
            coordinator,
            layer=Layer.FOUNDATIONAL,
            critical=True,
        ),
        DaemonSpec(
            "event_consumers",
            adapters.event_consumers_daemon,
            "runs this process's durable event consumers",
            profiles("coordinator", "minimal"),
            layer=Layer.FOUNDATIONAL,
            critical=True,
        ),
        DaemonSpec(
            "dlq_retry",
            adapters.dlq_retry_daemon,
            "re-delivers dead-lettered events with backoff",
            coordinator,
            depends_on=("leader_election", "event_consumers"),
            leader_only=True,
        ),
        DaemonSpec(
            "event_retention",
            adapters.event_retention_daemon,
            "prunes the event log by age and count",
            coordinator,
            depends_on=("leader_election",),
            leader_only=True,
        ),
        DaemonSpec(
            "queue_reaper",
            adapters.queue_reaper_daemon,
            "re-queues jobs whose lease expired",
            coordinator,
            critical=True,
            depends_on=("leader_election",),
            leader_only=True,
        ),
        DaemonSpec(
            "node_lost",
            agent.node_lost_daemon,
            "marks silent nodes lost, publishes NODE_LOST and re-queues their jobs",
            coordinator,
            critical=True,
            depends_on=("leader_election",),
            leader_only=True,
        ),
        DaemonSpec(
            "health_monitor",
            health.health_monitor_daemon,
            "moves open circuits to half-open, scores system health, applies the pause rule",
            coordinator,
            depends_on=("leader_election",),
            leader_only=True,
            layer=Layer.APPLICATION,
        ),
        DaemonSpec(
            "operations",
            activity.operations_daemon,
            "feeds circuit breakers and job counters from queue events; sends operational alerts",
            coordinator,
            depends_on=("leader_election",),
            leader_only=True,
            layer=Layer.APPLICATION,
        ),
        DaemonSpec(
            "alert_checks",
            alert_checks.alert_checks_daemon,
            "raises the alerts no single event carries: no promotion for hours, dead letters piling up",
            coordinator,
            depends_on=("leader_election",),
            leader_only=True,
            layer=Layer.APPLICATION,
        ),
        DaemonSpec(
            "autoscaler",
            autoscaler.autoscaler_daemon,
            "launches pool machines for queued work and replaces lost ones, within max_nodes and the budget",
            coordinator,
            depends_on=("leader_election",),
            leader_only=True,
            layer=Layer.APPLICATION,
        ),
        DaemonSpec(
            "idle_shutdown",
            idle.idle_shutdown_daemon,
            "drains idle nodes and terminates them through their provider once their data is safe",
            coordinator,
            depends_on=("leader_election",),
            leader_only=True,
            layer=Layer.APPLICATION,
        ),
        DaemonSpec(
            "pipeline",
            pipeline.pipeline_daemon,
            "turns job results into the next stage's jobs; keeps each pipeline's progress record",
            coordinator,
            critical=True,
            depends_on=("leader_election",),
            leader_only=True,
            layer=Layer.APPLICATION,
        ),
        DaemonSpec(
            "selfplay_scheduler",
            pipeline.scheduler_daemon,
            "keeps selfplay queued per config by priority, throttled by backpressure; pauses on bad health",
            coordinator,
            depends_on=("leader_election",),
            leader_only=True,
            layer=Layer.APPLICATION,
        ),
        DaemonSpec(
            "tune",
            tune.tune_daemon,
            "each running tune's step: budget, ratings, dropped variants, proposals, exploit and explore, matches; "
            "registers and rates distilled networks",
            coordinator,
            depends_on=("leader_election",),
            leader_only=True,
            layer=Layer.APPLICATION,
        ),
        DaemonSpec(
            "maintenance",
            ops.maintenance_daemon,
            "store upkeep (PRAGMA optimize and VACUUM, or ANALYZE) and garbage collection by retention.*",
            coordinator,
            depends_on=("leader_election",),
            leader_only=True,
            layer=Layer.APPLICATION,
        ),
        DaemonSpec(
            "backup",
            ops.backup_daemon,
            "backs the store and the artifact manifest up every backup.interval_s, keeping backup.keep",
            coordinator,
            depends_on=("leader_election",),
            leader_only=True,
            layer=Layer.APPLICATION,
        ),
    )
    return workers, others


def daemon_table() -> DaemonTable[AppParts]:
    """The whole table, for a process that has the App: the CLI and the library start these.

    DaemonError when a daemon of a worker profile is not declared a worker daemon.
    """
    workers, others = _specs()
    for spec in others:
        misplaced = sorted(spec.profiles & set(WORKER_PROFILES))
        if misplaced:
            raise DaemonError(
                f"daemon {spec.name} runs in worker profiles {misplaced} but its factory takes the App's parts: "
                "declare it with the worker daemons, its factory taking DaemonContext[WorkerParts]"
            )
    table: DaemonTable[AppParts] = DaemonTable()
    everything: tuple[DaemonSpec[AppParts], ...] = (*workers, *others)  # a worker daemon runs on the App's parts too
    for spec in everything:
        table.add(spec)
    return table


def worker_table() -> DaemonTable[WorkerParts]:
    """The worker profiles' daemons only: what `zeroloop worker` runs, over the store or behind the server."""
    workers, _others = _specs()
    table: DaemonTable[WorkerParts] = DaemonTable()
    for spec in workers:
        table.add(spec)
    return table


def event_participants() -> list[str]:
    """The modules of every daemon's factory: importing them declares every event producer and consumer."""
    return sorted({getattr(spec.factory, "__module__", "") for spec in daemon_table().specs.values()} - {""})


class App:
    """Everything one zeroloop process has open, in the order it opens and closes it."""

    def __init__(
        self,
        settings: Settings,
        *,
        source: str = "zeroloop",
        upgrade: bool | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Open the store; upgrade an embedded store's schema when settings allow, else require it current.

        `source` names this process in the events it publishes. `upgrade` overrides the
        setting: True always upgrades, False never does. `clock` (epoch seconds) is what
        every part opened here reads the time from; tests inject a fake one.
        """
        self.settings = settings
        self.clock = clock
        providers = build_providers(settings)  # bad pools are refused before anything is opened
        self.store = Store.for_settings(settings)
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
        cluster = settings.cluster
        self.bus = EventBus(
            self.store,
            node=cluster.node_id,
            source=source,
            max_payload_bytes=settings.events.max_payload_bytes,
            clock=clock,
        )
        self.queue = JobQueue(self.store, self.bus, settings, clock=clock)
        # A holder names this process, not just the machine: two processes on one node must not share a lease.
        self.leases = LeaseManager(
            self.store, self.bus, holder=f"{cluster.node_id}/{os.getpid()}", ttl_s=cluster.leader_lease_s, clock=clock
        )
        self.nodes = Nodes(self.store, self.bus, clock=clock)
        self.breakers = CircuitBreakers(self.store, self.bus, settings.health, clock=clock)
        self.health = HealthMonitor(
            self.store,
            settings.health,
            daemon_fresh_s=3 * settings.daemons.health_interval_s,
            node_lost_after_s=cluster.node_lost_after_s,
            clock=clock,
        )
        self.artifacts = Artifacts(
            self.store,
            self.bus,
            url=settings.artifacts_url,
            cache_dir=settings.data_dir / "cache",
            cache_max_bytes=settings.artifacts.cache_max_bytes,
            bandwidth_bytes_per_s=settings.artifacts.bandwidth_limit_bytes_per_s,
            node=cluster.node_id,
            clock=clock,
            held_dir=settings.data_dir / "held" / cluster.node_id,
            storage_options=settings.artifacts.storage_options,
        )
        self.models = ModelRegistry(self.store, self.bus, clock, evaluation=settings.evaluation)
        self.daemon_records = DaemonRecords(self.store, self.bus)
        self.fleet = Fleet(
            self.store,
            self.bus,
            self.nodes,
            self.breakers,
            settings,
            providers,
            worker_env=worker_env(settings, self.store, clock),
            clock=clock,
        )
        self.daemons: DaemonManager[Any] | None = None  # set by bootstrap.initialize_all_coordinators

    def close(self) -> None:
        """Close everything this App opened, in reverse order."""
        self.store.close()

    def __enter__(self) -> App:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
