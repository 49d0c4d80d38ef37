"""Provider-agnostic idle shutdown of rented nodes: decide (pure), then act through a provider.

A node is busy while it holds a job lease or its GPU (CPU without a GPU) utilisation is
at least `idle.util_threshold_pct`. An idle node's `idle_since` is recorded; once idle
for its provider's threshold it is drained (takes no new work), and once draining for
`idle.drain_period_s` it is terminated through the fleet: a pool's machine through its
provider, a worker started by hand by telling its agent to stop. Nothing is drained or
terminated while there is pending work, below the provider's minimum node count, or
while the node holds the only copy of an artifact. In a dry run the decisions are the
same but only NODE_IDLE_SHUTDOWN events (dry_run=true) and log lines come out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from zeroloop.cluster.leases import leader_fence
from zeroloop.cluster.nodes import LIVE, Fence, Nodes, NodeStatus
from zeroloop.config import IdleSettings
from zeroloop.daemons.daemon import Clock, DaemonContext, LoopDaemon
from zeroloop.events.bus import EventBus
from zeroloop.events.wiring import declare
from zeroloop.ports import AppParts
from zeroloop.store.database import Store
from zeroloop.store.queries import artifacts as artifact_queries
from zeroloop.store.queries import health as health_queries
from zeroloop.store.queries import nodes as node_queries

log = logging.getLogger(__name__)
declare("zeroloop.fleet.idle", emits=("NODE_IDLE_SHUTDOWN",))


@dataclass(frozen=True)
class IdleNode:
    """What the idle rule needs about one node (times: epoch seconds; cost: currency units/hour)."""

    id: str
    provider: str
    status: NodeStatus
    host: str = ""
    idle_since: float | None = None
    status_changed_at: float = 0.0
    cost_per_hour: float | None = None
    leased_jobs: int = 0
    sole_artifacts: int = 0
    utilisation: dict[str, Any] = field(default_factory=dict)
    pool: str | None = None  # the provider pool that launched it; None: started by hand

    @property
    def group(self) -> str:
        """What `min_nodes` counts this node in: its pool, else its provider."""
        return f"pool:{self.pool}" if self.pool is not None else self.provider


class Action(StrEnum):
    """What to do with one node."""

    KEEP = "keep"
    MARK_IDLE = "mark_idle"
    CLEAR_IDLE = "clear_idle"
    DRAIN = "drain"
    TERMINATE = "terminate"


@dataclass(frozen=True)
class IdleDecision:
    """One decision with its reason (idle_s: seconds idle so far)."""

    node: IdleNode
    action: Action
    reason: str
    idle_s: float = 0.0


def busy(node: IdleNode, util_threshold_pct: float) -> bool:
    """Whether a node is working: a job lease, or GPU (else CPU) utilisation at or above the threshold."""
    if node.leased_jobs:
        return True
    load = node.utilisation.get("gpu_pct")
    if load is None:
        load = node.utilisation.get("cpu_pct", 0.0)
    return float(load) >= util_threshold_pct


def _per_provider(table: Mapping[str, Any], provider: str) -> Any:
    return table.get(provider, table.get("default"))


def decide(
    nodes: Iterable[IdleNode],
    *,
    now: float,
    settings: IdleSettings,
    pending_work: int,
    pool_min: Mapping[str, int] | None = None,
) -> list[IdleDecision]:
    """The decisions for every live node at `now`, given how many jobs are waiting (pure).

    A pool's nodes keep the pool's `min_nodes` (`pool_min`); nodes started by hand keep
    `idle.min_nodes` of their provider.
    """
    if not settings.enabled:
        return []
    live = [n for n in nodes if n.status in (NodeStatus.ACTIVE, NodeStatus.DRAINING, NodeStatus.DRAINED)]
    active: dict[str, int] = {}
    for node in live:
        if node.status is NodeStatus.ACTIVE:
            active[node.group] = active.get(node.group, 0) + 1
    decisions = []
    # Longest idle first, so the minimum kept is made of the most recently busy nodes.
    for node in sorted(live, key=lambda n: (n.idle_since is None, n.idle_since or 0.0, n.id)):
        if busy(node, settings.util_threshold_pct):
            action = Action.CLEAR_IDLE if node.idle_since is not None else Action.KEEP
            decisions.append(IdleDecision(node, action, "busy"))
            continue
        if node.idle_since is None:
            decisions.append(IdleDecision(node, Action.MARK_IDLE, "became idle"))
            continue
        idle_s = now - node.idle_since
        if pending_work > 0:
            decisions.append(IdleDecision(node, Action.KEEP, f"pending work: {pending_work} job(s) waiting", idle_s))
            continue
        if node.sole_artifacts:
            reason = f"holds the only copy of {node.sole_artifacts} artifact(s)"
            decisions.append(IdleDecision(node, Action.KEEP, reason, idle_s))
            continue
        if node.status in (NodeStatus.DRAINING, NodeStatus.DRAINED):
            drained_s = now - node.status_changed_at
            if drained_s >= settings.drain_period_s:
                decisions.append(
                    IdleDecision(node, Action.TERMINATE, f"idle and drained for {drained_s:.0f} s", idle_s)
                )
            else:
                decisions.append(
                    IdleDecision(
                        node, Action.KEEP, f"draining ({drained_s:.0f} of {settings.drain_period_s:g} s)", idle_s
                    )
                )
            continue
        threshold = float(_per_provider(settings.threshold_s, node.provider))
        if idle_s < threshold:
            decisions.append(IdleDecision(node, Action.KEEP, f"idle {idle_s:.0f} of {threshold:g} s", idle_s))
            continue
        if node.pool is not None:
            minimum = int((pool_min or {}).get(node.pool, 0))
        else:
            minimum = int(_per_provider(settings.min_nodes, node.provider) or 0)
        if active.get(node.group, 0) - 1 < minimum:
            decisions.append(IdleDecision(node, Action.KEEP, f"min nodes: {node.group} keeps {minimum}", idle_s))
            continue
        active[node.group] -= 1
        decisions.append(IdleDecision(node, Action.DRAIN, f"idle {idle_s:.0f} s >= {threshold:g} s", idle_s))
    return decisions


Terminate = Callable[[IdleNode, str], object]


class IdleShutdown:
    """Reads the nodes, decides, and acts (or, in a dry run, reports); tracks the cost saved."""

    def __init__(
        self,
        store: Store,
        bus: EventBus,
        nodes: Nodes,
        settings: IdleSettings,
        *,
        terminate: Terminate,
        clock: Clock = time.time,
        fence: Fence | None = None,
        pool_min: Mapping[str, int] | None = None,
    ) -> None:
        """`terminate(node, reason)` stops a node: the fleet's terminate, through the node's provider.

        `pool_min` is each provider pool's `min_nodes`.
        """
        self.store = store
        self.bus = bus
        self.nodes = nodes
        self.settings = settings
        self.terminate = terminate
        self.pool_min = dict(pool_min or {})
        self.clock = clock
        self.fence = fence
        self.saved_cost_per_hour = 0.0
        self.terminated: list[str] = []

    def observe(self) -> tuple[list[IdleNode], int]:
        """The live nodes as IdleNodes, and the number of runnable queued jobs."""
        now = self.clock()
        with self.store.read() as conn:
            rows = node_queries.list_nodes(conn, tuple(s.value for s in LIVE))
            leased = health_queries.leased_jobs_by_node(conn, now)
            pending = health_queries.runnable_job_count(conn, now)
            sole = {row["id"]: len(artifact_queries.sole_copies_on_node(conn, row["id"])) for row in rows}
        found = [
            IdleNode(
                id=row["id"],
                provider=row["provider"],
                status=NodeStatus(row["status"]),
                host=row["host"],
                idle_since=row["idle_since"],
                status_changed_at=row["status_changed_at"],
                cost_per_hour=row["cost_per_hour"],
                leased_jobs=leased.get(row["id"], 0),
                sole_artifacts=sole[row["id"]],
                utilisation=dict(row["utilisation"] or {}),
                pool=row["pool"],
            )
            for row in rows
        ]
        return found, pending

    def run_once(self) -> list[IdleDecision]:
        """One round: observe, decide, apply; return the decisions."""
        nodes, pending = self.observe()
        decisions = decide(
            nodes, now=self.clock(), settings=self.settings, pending_work=pending, pool_min=self.pool_min
        )
        self.apply(decisions)
        return decisions

    def apply(self, decisions: Sequence[IdleDecision]) -> None:
        """Carry the decisions out (dry run: report DRAIN as the termination it leads to, change nothing)."""
        now = self.clock()
        for decision in decisions:
            node = decision.node
            if decision.action is Action.MARK_IDLE:
                with self.store.transaction() as conn:
                    node_queries.set_idle_since(conn, node.id, now)
            elif decision.action is Action.CLEAR_IDLE:
                with self.store.transaction() as conn:
                    node_queries.set_idle_since(conn, node.id, None)
            elif self.settings.dry_run and decision.action is Action.DRAIN:
                log.info("dry run: would drain and terminate node %s (%s)", node.id, decision.reason)
                self._announce(node, decision.idle_s, dry_run=True)
            elif decision.action is Action.DRAIN:
                log.info("draining idle node %s (%s)", node.id, decision.reason)
                self.nodes.set_status(node.id, NodeStatus.DRAINING)
            elif decision.action is Action.TERMINATE and not self.settings.dry_run:
                self._terminate(node, decision)

    def _terminate(self, node: IdleNode, decision: IdleDecision) -> None:
        if self.fence is not None:
            with self.store.transaction() as conn:
                self.fence(conn)  # only the current leader terminates machines
        self.terminate(node, decision.reason)
        with self.store.transaction():
            self._announce(node, decision.idle_s, dry_run=False)
        self.saved_cost_per_hour += node.cost_per_hour or 0.0
        self.terminated.append(node.id)
        log.info("terminated idle node %s (%s)", node.id, decision.reason)

    def _announce(self, node: IdleNode, idle_s: float, *, dry_run: bool) -> None:
        payload = {
            "node": node.id,
            "provider": node.provider,
            "idle_s": max(0.0, idle_s),
            "dry_run": dry_run,
            "cost_saved_per_hour": node.cost_per_hour,
        }
        self.bus.publish("NODE_IDLE_SHUTDOWN", payload, dedup_key=f"idle:{node.id}:{node.idle_since}:{dry_run}")


class IdleShutdownDaemon(LoopDaemon):
    """Runs IdleShutdown every `idle.interval_s` seconds."""

    def __init__(self, idle: IdleShutdown, interval_s: float, *, clock: Clock) -> None:
        super().__init__(interval_s, clock=clock)
        self.idle = idle

    async def tick(self) -> None:
        """One idle-shutdown round."""
        await asyncio.to_thread(self.idle.run_once)

    def details(self) -> dict[str, Any]:
        """Dry run or not, nodes terminated, cost saved (currency units/hour)."""
        return {
            "dry_run": self.idle.settings.dry_run,
            "terminated": len(self.idle.terminated),
            "saved_cost_per_hour": self.idle.saved_cost_per_hour,
        }


def idle_shutdown_daemon(context: DaemonContext[AppParts]) -> IdleShutdownDaemon:
    """Factory of the `idle_shutdown` daemon."""
    app = context.parts
    fence = leader_fence(app.leases, context.leadership)
    idle = IdleShutdown(
        app.store,
        app.bus,
        app.nodes,
        app.settings.idle,
        terminate=lambda node, reason: app.fleet.terminate(node.id, reason=f"idle: {reason}", fence=fence),
        clock=context.clock,
        fence=fence,
        pool_min={name: pool.min_nodes for name, pool in app.settings.providers.items()},
    )
    return IdleShutdownDaemon(idle, app.settings.idle.interval_s, clock=context.clock)
