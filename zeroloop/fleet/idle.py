"""Idle shutdown, the fleet's scale-down: decide (pure), then act through the fleet.

What zeroloop launches, zeroloop stops. A node is idle when it holds no job lease and
has claimed or finished no job for its idle time (counted from the later of its last job
and its registration), and it is stopped only while it holds no only copy of an
artifact. Its CPU and GPU utilisation are recorded as evidence but decide nothing: on a
shared machine the load of others is not this node's work, and a node that ran a job a
minute ago is busy whatever its load reads now.

A pool's machines follow the pool (`[providers.NAME]`): `scale_down` (on by default),
`idle_s` and `drain_s`, and `min_nodes` are always kept. Workers started by hand are
stopped only for a provider listed in `idle.threshold_s` (a laptop's `zeroloop run` is
never stopped behind its owner's back), keeping `idle.min_nodes` of that provider.

An idle node is first drained (it claims nothing and uploads what only it holds); once
drained and `drain_s` (`idle.drain_period_s` for hand-started ones) has passed, it is
terminated through the fleet: a pool's machine through its provider, a hand-started
worker by telling its agent to stop. Every drain and termination is recorded as a
decision of scope `fleet:<pool>` (or `fleet:<provider>`) with its evidence, and
announced with NODE_IDLE_SHUTDOWN. In a dry run (`idle.dry_run`, off by default) the
decisions are the same but only NODE_IDLE_SHUTDOWN events (dry_run=true) come out.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from zeroloop.cluster.leases import leader_fence
from zeroloop.cluster.nodes import LIVE, Fence, Nodes, NodeStatus
from zeroloop.config import IdleSettings, PoolSettings
from zeroloop.daemons.daemon import Clock, DaemonContext, LoopDaemon
from zeroloop.events.bus import EventBus
from zeroloop.events.wiring import declare
from zeroloop.ports import AppParts
from zeroloop.store.database import Store
from zeroloop.store.queries import artifacts as artifact_queries
from zeroloop.store.queries import health as health_queries
from zeroloop.store.queries import nodes as node_queries
from zeroloop.store.queries import pipelines as decision_queries

log = logging.getLogger(__name__)
declare("zeroloop.fleet.idle", emits=("NODE_IDLE_SHUTDOWN",))


@dataclass(frozen=True)
class IdleNode:
    """What the idle rule needs about one node (times: epoch seconds; cost: currency units/hour)."""

    id: str
    provider: str
    status: NodeStatus
    host: str = ""
    idle_since: float | None = None  # as last recorded
    status_changed_at: float = 0.0
    registered_at: float = 0.0
    last_job_at: float | None = None  # the last claim or finish of a job on this node
    cost_per_hour: float | None = None
    leased_jobs: int = 0
    sole_artifacts: int = 0
    utilisation: dict[str, Any] = field(default_factory=dict)
    pool: str | None = None  # the provider pool that launched it; None: started by hand

    @property
    def group(self) -> str:
        """What `min_nodes` counts this node in: its pool, else its provider."""
        return f"pool:{self.pool}" if self.pool is not None else self.provider

    @property
    def scope(self) -> str:
        """The decision scope its scale-down is recorded under."""
        return f"fleet:{self.pool or self.provider}"

    def quiet_since(self) -> float:
        """Since when this node has run no job: its last job, or its registration if later (epoch seconds)."""
        return max(self.registered_at, self.last_job_at or 0.0)

    def evidence(self) -> dict[str, Any]:
        """Its load, kept with each decision (shown, never the rule)."""
        load = self.utilisation
        return {key: load[key] for key in ("cpu_pct", "gpu_pct", "memory_pct") if load.get(key) is not None}


class Action(StrEnum):
    """What to do with one node."""

    KEEP = "keep"
    MARK_IDLE = "mark_idle"  # record idle_since (for `nodes ls`), nothing else
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


@dataclass(frozen=True)
class Rule:
    """The scale-down rule of one node: after `idle_s` idle, drain for `drain_s`, keep `min_nodes` of its group."""

    idle_s: float
    drain_s: float
    min_nodes: int


def _per_provider(table: Mapping[str, Any], provider: str) -> Any:
    return table.get(provider, table.get("default"))


def rule_for(node: IdleNode, settings: IdleSettings, pools: Mapping[str, PoolSettings]) -> Rule | str:
    """The rule that applies to `node`, or why none does (its pool does not scale down, ...)."""
    if node.pool is not None:
        pool = pools.get(node.pool)
        if pool is None:
            return f"pool {node.pool} is not in the settings (providers.{node.pool}): not stopped for idleness"
        if not pool.scale_down:
            return f"providers.{node.pool}.scale_down is false"
        return Rule(pool.idle_s, pool.drain_s, pool.min_nodes)
    threshold = _per_provider(settings.threshold_s, node.provider)
    if threshold is None:
        return f"started by hand ({node.provider}): not stopped for idleness unless idle.threshold_s lists it"
    minimum = int(_per_provider(settings.min_nodes, node.provider) or 0)
    return Rule(float(threshold), settings.drain_period_s, minimum)


def decide(
    nodes: Iterable[IdleNode],
    *,
    now: float,
    settings: IdleSettings,
    pools: Mapping[str, PoolSettings] | None = None,
) -> list[IdleDecision]:
    """The decisions for every live node at `now` (pure); `pools` are the settings' `[providers.*]` tables."""
    if not settings.enabled:
        return []
    pools = pools or {}
    live = [n for n in nodes if n.status in (NodeStatus.ACTIVE, NodeStatus.DRAINING, NodeStatus.DRAINED)]
    active: dict[str, int] = {}
    for node in live:
        if node.status is NodeStatus.ACTIVE:
            active[node.group] = active.get(node.group, 0) + 1
    decisions = []
    # Longest idle first, so the minimum kept is made of the most recently busy nodes.
    for node in sorted(live, key=lambda n: (n.quiet_since(), n.id)):
        if node.leased_jobs:
            action = Action.CLEAR_IDLE if node.idle_since is not None else Action.KEEP
            decisions.append(IdleDecision(node, action, f"running {node.leased_jobs} job(s)"))
            continue
        quiet = node.quiet_since()
        idle_s = max(0.0, now - quiet)
        if node.idle_since != quiet:
            decisions.append(IdleDecision(node, Action.MARK_IDLE, "no job running", idle_s))
        rule = rule_for(node, settings, pools)
        if isinstance(rule, str):
            decisions.append(IdleDecision(node, Action.KEEP, rule, idle_s))
            continue
        if node.sole_artifacts:
            reason = f"holds the only copy of {node.sole_artifacts} artifact(s)"
            decisions.append(IdleDecision(node, Action.KEEP, reason, idle_s))
            continue
        if node.status in (NodeStatus.DRAINING, NodeStatus.DRAINED):
            # No job and no only copy left: drained, or draining long enough for its agent to have seen it.
            draining_s = now - node.status_changed_at
            if node.status is NodeStatus.DRAINED or draining_s >= rule.drain_s:
                reason = f"idle {idle_s:.0f} s, {node.status.value} for {draining_s:.0f} s"
                decisions.append(IdleDecision(node, Action.TERMINATE, reason, idle_s))
            else:
                reason = f"draining ({draining_s:.0f} of {rule.drain_s:g} s)"
                decisions.append(IdleDecision(node, Action.KEEP, reason, idle_s))
            continue
        if idle_s < rule.idle_s:
            decisions.append(IdleDecision(node, Action.KEEP, f"idle {idle_s:.0f} of {rule.idle_s:g} s", idle_s))
            continue
        if active.get(node.group, 0) - 1 < rule.min_nodes:
            decisions.append(IdleDecision(node, Action.KEEP, f"min nodes: {node.group} keeps {rule.min_nodes}", idle_s))
            continue
        active[node.group] -= 1
        reason = f"ran no job for {idle_s:.0f} s >= {rule.idle_s:g} s"
        decisions.append(IdleDecision(node, Action.DRAIN, reason, idle_s))
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
        pools: Mapping[str, PoolSettings] | None = None,
        clock: Clock = time.time,
        fence: Fence | None = None,
    ) -> None:
        """`terminate(node, reason)` stops a node: the fleet's terminate, through the node's provider.

        `pools` are the `[providers.*]` tables, whose `scale_down`, `idle_s`, `drain_s` and
        `min_nodes` rule their machines.
        """
        self.store = store
        self.bus = bus
        self.nodes = nodes
        self.settings = settings
        self.terminate = terminate
        self.pools = dict(pools or {})
        self.clock = clock
        self.fence = fence
        self.saved_cost_per_hour = 0.0
        self.terminated: list[str] = []

    def observe(self) -> list[IdleNode]:
        """The live nodes as IdleNodes: their leases, last job, only copies and load."""
        now = self.clock()
        with self.store.read() as conn:
            rows = node_queries.list_nodes(conn, tuple(s.value for s in LIVE))
            leased = health_queries.leased_jobs_by_node(conn, now)
            last_job = health_queries.last_job_by_node(conn, [row["id"] for row in rows])
            sole = {row["id"]: len(artifact_queries.sole_copies_on_node(conn, row["id"])) for row in rows}
        return [
            IdleNode(
                id=row["id"],
                provider=row["provider"],
                status=NodeStatus(row["status"]),
                host=row["host"],
                idle_since=row["idle_since"],
                status_changed_at=row["status_changed_at"],
                registered_at=row["registered_at"],
                last_job_at=last_job.get(row["id"]),
                cost_per_hour=row["cost_per_hour"],
                leased_jobs=leased.get(row["id"], 0),
                sole_artifacts=sole[row["id"]],
                utilisation=dict(row["utilisation"] or {}),
                pool=row["pool"],
            )
            for row in rows
        ]

    def run_once(self) -> list[IdleDecision]:
        """One round: observe, decide, apply; return the decisions."""
        decisions = decide(self.observe(), now=self.clock(), settings=self.settings, pools=self.pools)
        self.apply(decisions)
        return decisions

    def apply(self, decisions: Sequence[IdleDecision]) -> None:
        """Carry the decisions out (dry run: report DRAIN as the termination it leads to, change nothing)."""
        for decision in decisions:
            node = decision.node
            if decision.action is Action.MARK_IDLE:
                with self.store.transaction() as conn:
                    node_queries.set_idle_since(conn, node.id, node.quiet_since())
            elif decision.action is Action.CLEAR_IDLE:
                with self.store.transaction() as conn:
                    node_queries.set_idle_since(conn, node.id, None)
            elif self.settings.dry_run and decision.action is Action.DRAIN:
                log.info("dry run: would drain and stop node %s (%s)", node.id, decision.reason)
                with self.store.transaction():
                    self._announce(node, decision.idle_s, dry_run=True)
            elif decision.action is Action.DRAIN:
                log.info("draining idle node %s (%s)", node.id, decision.reason)
                with self.store.transaction() as conn:
                    if self.fence is not None:
                        self.fence(conn)
                    row = node_queries.get_node(conn, node.id)
                    if row is not None and row["status"] == NodeStatus.ACTIVE.value:
                        self.nodes.move(conn, row, NodeStatus.DRAINING)
                        self._record(conn, decision, "drain")
            elif decision.action is Action.TERMINATE and not self.settings.dry_run:
                self._terminate(node, decision)

    def _terminate(self, node: IdleNode, decision: IdleDecision) -> None:
        if self.fence is not None:
            with self.store.transaction() as conn:
                self.fence(conn)  # only the current leader terminates machines
        self.terminate(node, decision.reason)
        with self.store.transaction() as conn:
            self._record(conn, decision, "terminate")
            self._announce(node, decision.idle_s, dry_run=False)
        self.saved_cost_per_hour += node.cost_per_hour or 0.0
        self.terminated.append(node.id)
        log.info("stopped idle node %s (%s)", node.id, decision.reason)

    def _record(self, conn: Any, decision: IdleDecision, outcome: str) -> None:
        node = decision.node
        evidence = {
            "reason": decision.reason,
            "node": node.id,
            "idle_s": round(decision.idle_s, 1),
            "last_job_at": node.last_job_at,
            "utilisation": node.evidence(),
        }
        decision_queries.insert_decision(
            conn, config_key=node.scope, kind="scale_down", outcome=outcome, evidence=evidence, now=self.clock()
        )

    def _announce(self, node: IdleNode, idle_s: float, *, dry_run: bool) -> None:
        payload = {
            "node": node.id,
            "provider": node.pool or node.provider,
            "idle_s": max(0.0, idle_s),
            "dry_run": dry_run,
            "cost_saved_per_hour": node.cost_per_hour,
        }
        self.bus.publish("NODE_IDLE_SHUTDOWN", payload, dedup_key=f"idle:{node.id}:{node.quiet_since()}:{dry_run}")


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
    settings = app.settings
    idle = IdleShutdown(
        app.store,
        app.bus,
        app.nodes,
        settings.idle,
        terminate=lambda node, reason: app.fleet.terminate(node.id, reason=f"idle: {reason}", fence=fence),
        pools=settings.providers,
        clock=context.clock,
        fence=fence,
    )
    # A pool's idle time may be shorter than the default interval: look at least that often.
    shortest = min((pool.idle_s for pool in settings.providers.values() if pool.scale_down), default=math.inf)
    return IdleShutdownDaemon(idle, min(settings.idle.interval_s, max(1.0, shortest / 4)), clock=context.clock)
