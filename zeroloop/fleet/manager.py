"""The fleet: launching, stopping and reconciling the machines of every provider pool.

The node row is the launch request: `launch` writes it REQUESTED, asks the provider,
and moves it to LAUNCHING with the provider's handle, or to FAILED with the reason. The
worker registers itself (ACTIVE). `reconcile` compares each pool's rows with what its
provider lists: a launch that never registered in time is FAILED and stopped, a live
node whose machine is gone is LOST (its jobs re-queued at once), a stop that the
provider confirms is TERMINATED, and a machine the provider bills but zeroloop does not
know is an orphan, reported or stopped. `terminate` refuses a node that holds the only
copy of an artifact: it drains it instead, and its agent uploads those copies first.

Every change that may be fenced takes the caller's `fence`, so only the current leader
launches and stops machines.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from zeroloop.cluster.breakers import CircuitBreakers
from zeroloop.cluster.nodes import LIVE, STARTING, Fence, Nodes, NodeStatus, Requeue, cost_of
from zeroloop.config import PoolSettings, Settings
from zeroloop.errors import ZeroloopError
from zeroloop.events.bus import EventBus
from zeroloop.events.wiring import declare
from zeroloop.fleet.providers.base import LaunchSpec, MachineState, Provider, ProviderError
from zeroloop.store.database import Store
from zeroloop.store.queries import artifacts as artifact_queries
from zeroloop.store.queries import daemons as daemon_queries
from zeroloop.store.queries import health as health_queries
from zeroloop.store.queries import nodes as queries

log = logging.getLogger(__name__)
declare(
    "zeroloop.fleet.manager",
    emits=("NODE_LAUNCHED", "NODE_LAUNCH_FAILED", "NODE_TERMINATED", "FLEET_ORPHAN_FOUND", "FLEET_BUDGET_REACHED"),
)

GONE = (MachineState.GONE, MachineState.FAILED)
_REGISTERED_EARLY = frozenset(status.value for status in LIVE)
# Nodes that count against a pool's max_nodes and the budget: everything not yet stopped.
COUNTED = (*STARTING, *LIVE)


class FleetError(ZeroloopError):
    """A fleet operation was refused: unknown pool, over a limit or the budget, or a node holding only copies."""


@dataclass(frozen=True)
class LaunchOutcome:
    """One launch: the node id, and the provider's error when it failed."""

    node_id: str
    error: str | None = None


@dataclass
class Reconciled:
    """What one reconcile pass changed, by node id (and orphans by provider id)."""

    failed: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    terminated: list[str] = field(default_factory=list)
    drained: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)  # pools whose provider could not list its machines


WorkerEnv = Callable[[str, str, PoolSettings], dict[str, str]]


def direct_worker_env(settings: Settings) -> WorkerEnv:
    """Launched workers reach the cluster as this process does: the store and the artifact location."""

    def env(node_id: str, pool_name: str, pool: PoolSettings) -> dict[str, str]:
        return {
            **pool.env,
            "ZEROLOOP_CLUSTER__NODE_ID": node_id,
            "ZEROLOOP_CLUSTER__POOL": pool_name,
            "ZEROLOOP_STORE__URL": settings.store_url,
            "ZEROLOOP_ARTIFACTS__URL": settings.artifacts_url,
            **_storage_options_env(settings),
        }

    return env


def _storage_options_env(settings: Settings) -> dict[str, str]:
    """The artifact backend's options (an S3 endpoint and keys) for a launched worker, as JSON."""
    options = settings.artifacts.storage_options
    return {"ZEROLOOP_ARTIFACTS__STORAGE_OPTIONS": json.dumps(options)} if options else {}


class Fleet:
    """Named fleet operations over the store, the node list and one provider per pool."""

    def __init__(
        self,
        store: Store,
        bus: EventBus,
        nodes: Nodes,
        breakers: CircuitBreakers,
        settings: Settings,
        providers: Mapping[str, Provider],
        *,
        worker_env: WorkerEnv | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.bus = bus
        self.nodes = nodes
        self.breakers = breakers
        self.settings = settings
        self.providers = dict(providers)
        self.worker_env = worker_env or direct_worker_env(settings)
        self.clock = clock

    # --- reading ------------------------------------------------------------------------

    def provider(self, pool: str) -> Provider:
        """The provider of `pool`; FleetError naming the known pools when there is none."""
        found = self.providers.get(pool)
        if found is None:
            known = ", ".join(sorted(self.providers)) or "none (add [providers.NAME] to the settings)"
            raise FleetError(f"unknown provider pool {pool!r}; known pools: {known}")
        return found

    def cost_per_hour(self, conn: Connection) -> float:
        """What the fleet costs per hour now: the price of every billed machine."""
        rows = queries.list_nodes(conn)
        return sum(
            row["cost_per_hour"] or 0.0 for row in rows if row["billing_since"] is not None and row["pool"] is not None
        )

    def costs(self) -> dict[str, float]:
        """Cost so far (currency units) per pool, and `total`; hand-started nodes under `unmanaged`."""
        now = self.clock()
        with self.store.read() as conn:
            rows = queries.list_nodes(conn)
        found: dict[str, float] = {"total": 0.0}
        for row in rows:
            cost = cost_of(row, now)
            key = row["pool"] or "unmanaged"
            found[key] = found.get(key, 0.0) + cost
            found["total"] += cost
        return found

    # --- launching ----------------------------------------------------------------------

    def launch(
        self, pool_name: str, count: int = 1, *, profile: str | None = None, fence: Fence | None = None
    ) -> list[LaunchOutcome]:
        """Launch `count` machines of `pool_name` now; FleetError if over max_nodes or the budget (nothing launched)."""
        return [self.start(node_id) for node_id in self.request(pool_name, count, profile=profile, fence=fence)]

    def request(
        self, pool_name: str, count: int = 1, *, profile: str | None = None, fence: Fence | None = None
    ) -> list[str]:
        """Record `count` launch requests (REQUESTED nodes) of `pool_name`; `start` each to ask the provider.

        The limits are checked and the rows written in one transaction, so two requests
        never overshoot max_nodes or the budget. FleetError (nothing recorded) over either.
        """
        provider = self.provider(pool_name)
        pool = provider.pool
        if count < 1:
            raise FleetError(f"launch count must be at least 1, got {count}")
        profile = profile or pool.profile
        now = self.clock()
        node_ids = [f"{pool_name}-{uuid.uuid4().hex[:8]}" for _ in range(count)]
        with self.store.transaction() as conn:
            if fence is not None:
                fence(conn)
            present = len(queries.pool_nodes(conn, pool_name, tuple(s.value for s in COUNTED)))
            if present + count > pool.max_nodes:
                raise FleetError(
                    f"pool {pool_name} has {present} node(s) of max_nodes {pool.max_nodes}: "
                    f"cannot launch {count} more (raise providers.{pool_name}.max_nodes)"
                )
            over = self._over_budget(conn, pool, count)
            if over is None:
                for node_id in node_ids:
                    queries.insert_node(conn, self._requested_row(node_id, pool_name, pool, profile, now))
        if over is not None:
            budget, spending, adding = over
            self.bus.publish(
                "FLEET_BUDGET_REACHED",
                {"pool": pool_name, "budget_per_hour": budget, "cost_per_hour": spending, "refused": count},
            )
            raise FleetError(
                f"budget reached: the fleet costs {spending:g}/h and {count} more {pool_name} node(s) add "
                f"{adding:g}/h, over autoscaler.budget_per_hour {budget:g}"
            )
        return node_ids

    def _over_budget(self, conn: Connection, pool: PoolSettings, count: int) -> tuple[float, float, float] | None:
        """(budget, cost per hour now, cost per hour added) when `count` more machines would pass the budget."""
        budget = self.settings.autoscaler.budget_per_hour
        if budget is None:
            return None
        spending = self.cost_per_hour(conn)
        adding = (pool.price_per_hour or 0.0) * count
        return (budget, spending, adding) if spending + adding > budget else None

    def _requested_row(
        self, node_id: str, pool_name: str, pool: PoolSettings, profile: str, now: float
    ) -> dict[str, Any]:
        return {
            "id": node_id,
            "host": "",
            "provider": pool.kind,
            "pool": pool_name,
            "profile": profile,
            "labels": list(pool.labels),
            "cpu_count": pool.cpus,
            "memory_bytes": int(pool.memory_gb * 2**30),
            "disk_bytes": 0,
            "gpus": [],
            "cost_per_hour": pool.price_per_hour,
            "status": NodeStatus.REQUESTED.value,
            "utilisation": {},
            "registered_at": now,
            "heartbeat_at": now,
            "status_changed_at": now,
            "slots": pool.slots,
            "launched_at": now,
        }

    def start(self, node_id: str) -> LaunchOutcome:
        """Ask the provider to launch the machine of a REQUESTED node (this may take minutes: run it off a loop)."""
        with self.store.read() as conn:
            requested = queries.get_node(conn, node_id)
        if requested is None or requested["status"] != NodeStatus.REQUESTED.value:
            return LaunchOutcome(node_id, "the launch request was withdrawn")
        provider = self.provider(requested["pool"])
        pool = provider.pool
        profile = requested["profile"] or pool.profile
        spec = LaunchSpec(
            node_id=node_id,
            pool=provider.name,
            profile=profile,
            argv=("zeroloop", "worker", "--profile", profile),
            env={**self.worker_env(node_id, provider.name, pool), "ZEROLOOP_CLUSTER__SLOTS": str(pool.slots)},
            gpus=pool.gpus,
            cpus=pool.cpus,
            memory_bytes=int(pool.memory_gb * 2**30),
            labels=tuple(pool.labels),
        )
        key = f"provider:{provider.name}"
        try:
            launched = provider.launch(spec)
        except ProviderError as exc:
            with self.store.transaction() as conn:
                row = queries.get_node(conn, node_id)
                if row is not None and row["status"] == NodeStatus.REQUESTED.value:
                    self.nodes.move(conn, row, NodeStatus.FAILED, last_error=str(exc)[:2000])
                self.bus.publish("NODE_LAUNCH_FAILED", {"pool": provider.name, "node": node_id, "reason": str(exc)})
            self.breakers.record_failure(key)
            log.error("launch of %s in pool %s failed: %s", node_id, provider.name, exc)
            return LaunchOutcome(node_id, str(exc))
        with self.store.transaction() as conn:
            row = queries.get_node(conn, node_id)
            assert row is not None
            price = launched.price_per_hour if launched.price_per_hour is not None else pool.price_per_hour
            if row["status"] in _REGISTERED_EARLY and row["provider_id"] is None:
                # Its worker registered before this answer was recorded (a machine that boots fast): keep it.
                queries.update_node(conn, node_id, provider_id=launched.provider_id, cost_per_hour=price)
                recorded = True
            else:
                recorded = row["status"] == NodeStatus.REQUESTED.value and self.nodes.move(
                    conn,
                    row,
                    NodeStatus.LAUNCHING,
                    provider_id=launched.provider_id,
                    host=launched.host,
                    cost_per_hour=price,
                    register_by=self.clock() + pool.launch_timeout_s,
                )
            if recorded:
                self.bus.publish(
                    "NODE_LAUNCHED", {"pool": provider.name, "node": node_id, "provider_id": launched.provider_id}
                )
        if not recorded:  # withdrawn while the provider worked: do not leave the machine running
            self._stop(provider, launched.provider_id)
            return LaunchOutcome(node_id, "the launch request was withdrawn while launching; machine stopped")
        self.breakers.record_success(key)
        log.info("launched %s in pool %s (%s)", node_id, provider.name, launched.provider_id)
        return LaunchOutcome(node_id)

    # --- stopping -----------------------------------------------------------------------

    def terminate(self, node_id: str, *, reason: str, force: bool = False, fence: Fence | None = None) -> NodeStatus:
        """Stop a node's machine; FleetError while it holds the only copy of an artifact (it is drained instead).

        A node the fleet launched is stopped through its provider; a worker started by hand
        is told to stop through the store (its agent sees TERMINATING and drains itself).
        `force` gives up the only copies of a node that is lost or failed.
        """
        with self.store.transaction() as conn:
            if fence is not None:
                fence(conn)
            row = queries.get_node(conn, node_id)
            if row is None:
                raise FleetError(f"no node {node_id!r}; see `zeroloop nodes ls`")
            status = NodeStatus(row["status"])
            if status in (NodeStatus.TERMINATED, NodeStatus.TERMINATING):
                return status
            sole = artifact_queries.sole_copies_on_node(conn, node_id)
            refusal = None
            if sole and not force:
                if status in (NodeStatus.ACTIVE, NodeStatus.DRAINED):
                    self.nodes.move(conn, row, NodeStatus.DRAINING)  # committed: its agent starts uploading
                refusal = (
                    f"node {node_id} holds the only copy of {len(sole)} artifact(s): it is draining and "
                    "uploading them; it can be terminated once they are safe"
                    if status in LIVE
                    else f"node {node_id} is {status.value} and holds the only copy of {len(sole)} artifact(s); "
                    "terminating it gives them up: use --force if they are lost anyway"
                )
            elif status is NodeStatus.REQUESTED:
                self.nodes.move(conn, row, NodeStatus.TERMINATED)
                return NodeStatus.TERMINATED
            else:
                self.nodes.move(conn, row, NodeStatus.TERMINATING, last_error=reason[:2000])
        if refusal is not None:
            raise FleetError(refusal)
        if row["pool"] is not None and row["provider_id"] is not None and row["pool"] in self.providers:
            self.provider(row["pool"]).terminate(row["provider_id"])
        log.info("terminating node %s: %s", node_id, reason)
        return NodeStatus.TERMINATING

    def settle_drains(self, fence: Fence | None = None) -> list[str]:
        """Move DRAINING nodes that hold no job lease and no only copy to DRAINED; return their ids."""
        now = self.clock()
        settled = []
        with self.store.read() as conn:
            draining = queries.list_nodes(conn, (NodeStatus.DRAINING.value,))
            leased = health_queries.leased_jobs_by_node(conn, now)
        for row in draining:
            if leased.get(row["id"]):
                continue
            with self.store.transaction() as conn:
                if fence is not None:
                    fence(conn)
                if artifact_queries.sole_copies_on_node(conn, row["id"]):
                    continue
                if self.nodes.move(conn, row, NodeStatus.DRAINED):
                    settled.append(row["id"])
        return settled

    # --- reconciling --------------------------------------------------------------------

    def reconcile(self, requeue: Requeue, fence: Fence | None = None) -> Reconciled:
        """Compare every pool's rows with its provider's machines and settle the differences."""
        done = Reconciled()
        done.drained = self.settle_drains(fence)
        for name, provider in self.providers.items():
            try:
                machines = {m.provider_id: m for m in provider.machines()}
            except ProviderError as exc:
                # A failed listing (slurmctld restarting, a cloud API hiccup) is not a failed launch: it leaves the
                # pool's launch breaker alone, and nothing is judged gone on it; the next pass lists again.
                log.warning("pool %s: cannot list machines (nothing judged this pass): %s", name, exc)
                done.unlisted.append(name)
                continue
            with self.store.read() as conn:
                rows = queries.pool_nodes(conn, name)
            known = {row["provider_id"] for row in rows if row["provider_id"]}
            requested = {row["id"] for row in rows if row["status"] == NodeStatus.REQUESTED.value}
            by_node = {m.node_id: m for m in machines.values() if m.node_id}
            for row in rows:
                # A row without the provider's handle yet (requested, or registered before its launch was
                # recorded) is matched by the node id the provider knows.
                machine = machines.get(row["provider_id"] or "") or (
                    by_node.get(row["id"]) if row["provider_id"] is None else None
                )
                self._settle(provider, row, machine, requeue, fence, done)
            for machine in machines.values():
                if machine.provider_id in known or machine.state in GONE or machine.node_id in requested:
                    continue
                self._orphan(provider, machine.provider_id, machine.node_id, fence, done)
        return done

    def _settle(
        self,
        provider: Provider,
        row: dict[str, Any],
        machine: Any,
        requeue: Requeue,
        fence: Fence | None,
        done: Reconciled,
    ) -> None:
        status = NodeStatus(row["status"])
        gone = machine is None or machine.state in GONE
        now = self.clock()
        timed_out = {
            NodeStatus.REQUESTED: now - (row["launched_at"] or now) > provider.pool.launch_timeout_s,
            NodeStatus.LAUNCHING: row["register_by"] is not None and now > row["register_by"],
        }.get(status, False)
        changes = (
            timed_out
            or (status is NodeStatus.LAUNCHING and gone)
            or (status in LIVE and gone)
            or (gone and status in (NodeStatus.TERMINATING, NodeStatus.LOST))
            or (gone and status is NodeStatus.FAILED and row["provider_id"] is not None)
        )
        # A machine still running for a node being stopped, failed, or whose worker left (it may hang on its
        # way out) is still billed: ask again (a provider escalates, e.g. the local one to SIGKILL).
        stop_again = not gone and status in (NodeStatus.TERMINATING, NodeStatus.FAILED, NodeStatus.TERMINATED)
        if changes:  # most rows need nothing: no transaction (no write turn) for them
            with self.store.transaction() as conn:
                if fence is not None:
                    fence(conn)
                stop_again = self._apply(provider, row, status, machine, gone, requeue, conn, done) or stop_again
        if stop_again and row["provider_id"]:
            self._stop(provider, row["provider_id"])

    def _apply(
        self,
        provider: Provider,
        row: dict[str, Any],
        status: NodeStatus,
        machine: Any,
        gone: bool,
        requeue: Requeue,
        conn: Connection,
        done: Reconciled,
    ) -> bool:
        """Make the change `_settle` found due, in its transaction; True when the machine must be stopped."""
        now = self.clock()
        if status is NodeStatus.REQUESTED:
            # The launcher died between asking the provider and recording its answer.
            if not gone:
                self.nodes.move(conn, row, NodeStatus.LAUNCHING, provider_id=machine.provider_id, register_by=now)
                return False  # adopted: it registers soon or fails at the next pass
            self._fail(provider, row, conn, done, "the launch never completed (the launching process stopped?)")
            return False
        if status is NodeStatus.LAUNCHING:
            if gone:
                self._fail(provider, row, conn, done, "the machine vanished before its worker registered")
                return False
            why = f"its worker did not register within {provider.pool.launch_timeout_s:g} s"
            return self._fail(provider, row, conn, done, why)
        if status in LIVE:
            if self.nodes.mark_lost(conn, row, requeue, "its provider says the machine is gone"):
                done.lost.append(row["id"])
            return False
        # Gone: a stop the provider confirms, a lost machine, or a failed launch the provider had taken.
        if self.nodes.move(conn, row, NodeStatus.TERMINATED):
            requeue(row["id"])  # a job it still held (its drain cut short) runs again now, not after its lease
            daemon_queries.delete_node_daemons(conn, row["id"])  # a node gone for good leaves no daemon rows behind
            self._terminated(row, now)
            done.terminated.append(row["id"])
        return False

    def _fail(self, provider: Provider, row: dict[str, Any], conn: Connection, done: Reconciled, why: str) -> bool:
        if not self.nodes.move(conn, row, NodeStatus.FAILED, last_error=why):
            return False
        self._launch_failed(provider.name, row["id"], why)
        done.failed.append(row["id"])
        return True

    def _launch_failed(self, pool: str, node_id: str, why: str) -> None:
        self.bus.publish("NODE_LAUNCH_FAILED", {"pool": pool, "node": node_id, "reason": why})
        self.breakers.record_failure(f"provider:{pool}")
        log.error("node %s of pool %s failed: %s", node_id, pool, why)

    def _terminated(self, row: dict[str, Any], now: float) -> None:
        cost = cost_of(row, now)
        self.bus.publish(
            "NODE_TERMINATED",
            {"node": row["id"], "pool": row["pool"] or "", "cost": cost},
            dedup_key=f"term:{row['id']}",
        )

    def _stop(self, provider: Provider, provider_id: str) -> None:
        try:
            provider.terminate(provider_id)
        except ProviderError as exc:
            log.warning("pool %s: cannot stop %s yet: %s", provider.name, provider_id, exc)

    def _orphan(
        self, provider: Provider, provider_id: str, node_id: str | None, fence: Fence | None, done: Reconciled
    ) -> None:
        action = self.settings.autoscaler.orphans
        with self.store.transaction() as conn:
            if fence is not None:
                fence(conn)
            self.bus.publish(
                "FLEET_ORPHAN_FOUND",
                {"pool": provider.name, "provider_id": provider_id, "node": node_id, "action": action},
                dedup_key=f"orphan:{provider.name}:{provider_id}",
            )
        done.orphans.append(provider_id)
        if action == "terminate":
            self._stop(provider, provider_id)
