"""The nodes (`Nodes`): who is in the cluster, what each node has, and whether it is alive.

A node's status follows `NodeStatus` and changes only through `transition`. Nodes are
expiring records: a node whose heartbeat is older than `cluster.node_lost_after_s` is
marked LOST by the leader (NODE_LOST), and the jobs it leased are re-queued in the
same transaction, so the mark and the re-queue happen together or not at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy.engine import Connection

from zeroloop.config import ClusterSettings
from zeroloop.daemons.daemon import Clock
from zeroloop.errors import ZeroloopError
from zeroloop.events.bus import EventBus
from zeroloop.events.wiring import declare
from zeroloop.store.database import Store
from zeroloop.store.queries import leases as lease_queries
from zeroloop.store.queries import nodes as queries
from zeroloop.store.queries import tokens as token_queries

declare("zeroloop.cluster.nodes", emits=("NODE_REGISTERED", "NODE_LOST"))

Requeue = Callable[[str], object]
Fence = Callable[[Connection], None]


class NodeError(ZeroloopError):
    """A node operation was refused: unknown node or an illegal status change."""


class NodeRefused(NodeError):
    """The fleet gave this node up (failed, being stopped, stopped): it may not register again."""


class NodeStatus(StrEnum):
    """A node's place in its lifecycle; persisted as `nodes.status`, changed only through `transition`."""

    REQUESTED = "requested"  # the fleet decided to launch it; the provider was not asked yet
    LAUNCHING = "launching"  # the provider accepted the launch; waiting for the worker to register
    ACTIVE = "active"  # registered and heartbeating; claims work
    DRAINING = "draining"  # claims nothing new; its running jobs finish, its only copies are evacuated
    DRAINED = "drained"  # holds no job and no only copy: safe to terminate
    TERMINATING = "terminating"  # the provider was asked to stop the machine
    TERMINATED = "terminated"  # gone (stopped by the fleet, or a worker that left cleanly)
    LOST = "lost"  # missed its heartbeats; its leases were re-queued
    FAILED = "failed"  # the launch failed or the worker never registered in time


_EDGES: dict[NodeStatus, frozenset[NodeStatus]] = {
    # Asked for: the provider takes it, refuses it, or the request is withdrawn; or its worker registers before
    # the launcher recorded the provider's answer (a machine that boots fast on a loaded launcher).
    NodeStatus.REQUESTED: frozenset(
        {NodeStatus.LAUNCHING, NodeStatus.FAILED, NodeStatus.TERMINATED, NodeStatus.ACTIVE}
    ),
    # The worker registers, or it never does (timeout, the machine vanished), or we stop it first.
    NodeStatus.LAUNCHING: frozenset({NodeStatus.ACTIVE, NodeStatus.FAILED, NodeStatus.TERMINATING}),
    # Drained by hand or by idle shutdown, went silent, left cleanly, or stopped at once (nothing held).
    NodeStatus.ACTIVE: frozenset({NodeStatus.DRAINING, NodeStatus.LOST, NodeStatus.TERMINATED, NodeStatus.TERMINATING}),
    # Undrained, emptied, went silent, left cleanly, or stopped while it held nothing (no job, no only copy).
    NodeStatus.DRAINING: frozenset(
        {NodeStatus.ACTIVE, NodeStatus.DRAINED, NodeStatus.LOST, NodeStatus.TERMINATED, NodeStatus.TERMINATING}
    ),
    NodeStatus.DRAINED: frozenset({NodeStatus.ACTIVE, NodeStatus.TERMINATING, NodeStatus.LOST, NodeStatus.TERMINATED}),
    # The provider confirms it is gone (or it left by itself first); a silent one is still being stopped.
    NodeStatus.TERMINATING: frozenset({NodeStatus.TERMINATED}),
    # A lost node that registers again is active again (a new life, new leases), or draining again if it was
    # draining when it went silent (a drain is not forgotten), or is stopped.
    NodeStatus.LOST: frozenset({NodeStatus.ACTIVE, NodeStatus.DRAINING, NodeStatus.TERMINATING, NodeStatus.TERMINATED}),
    # A failed launch is stopped at the provider, in case the machine exists after all.
    NodeStatus.FAILED: frozenset({NodeStatus.TERMINATING, NodeStatus.TERMINATED}),
    # A worker started by hand may start again under the same id; a fleet node never comes back.
    NodeStatus.TERMINATED: frozenset({NodeStatus.ACTIVE}),
}

LIVE = (NodeStatus.ACTIVE, NodeStatus.DRAINING, NodeStatus.DRAINED)  # heartbeating workers
_ORPHANABLE = frozenset(status.value for status in LIVE)
LEADER_LEASE = "leader"  # the lease the coordinator holds (zeroloop.cluster.leases.LEADER)
STARTING = (NodeStatus.REQUESTED, NodeStatus.LAUNCHING)
# A machine the provider bills for: from launch until the provider says it is gone.
_BILLED = frozenset(
    {
        NodeStatus.LAUNCHING,
        NodeStatus.ACTIVE,
        NodeStatus.DRAINING,
        NodeStatus.DRAINED,
        NodeStatus.TERMINATING,
        NodeStatus.LOST,
    }
)


def transition(current: NodeStatus, target: NodeStatus, *, node: str = "node") -> NodeStatus:
    """Return `target` if `current -> target` is legal; raise NodeError otherwise."""
    if target not in _EDGES[current]:
        raise NodeError(f"node {node}: illegal status change {current} -> {target}")
    return target


def billed(status: NodeStatus, *, managed: bool) -> bool:
    """Whether a node in `status` costs money: a lost fleet machine still does, a lost hand-started one not."""
    if status is NodeStatus.LOST:
        return managed
    return status in _BILLED


def cost_of(row: dict[str, Any], now: float) -> float:
    """What a node has cost so far (currency units): its price times the hours it was billed."""
    price = row.get("cost_per_hour") or 0.0
    seconds = float(row.get("billed_s") or 0.0)
    if row.get("billing_since") is not None:
        seconds += max(0.0, now - row["billing_since"])
    return float(price) * seconds / 3600.0


@dataclass(frozen=True)
class NodeInfo:
    """What a node says about itself at registration (bytes for sizes, currency units/hour for cost)."""

    id: str
    host: str
    provider: str
    cpu_count: int
    memory_bytes: int
    disk_bytes: int
    labels: list[str] = field(default_factory=list)
    gpus: list[dict[str, Any]] = field(default_factory=list)
    cost_per_hour: float | None = None
    slots: int = 1
    pool: str | None = None


class Nodes:
    """Named operations on nodes over one store and bus (clock: epoch seconds, injectable)."""

    def __init__(
        self, store: Store, bus: EventBus, *, clock: Clock = time.time, orphan_after_s: float | None = None
    ) -> None:
        """`orphan_after_s`: see `heartbeat` (seconds; default `cluster.orphan_after_s`'s default; 0: never)."""
        self.store = store
        self.bus = bus
        self.clock = clock
        default: float = ClusterSettings.model_fields["orphan_after_s"].default
        self.orphan_after_s = default if orphan_after_s is None else orphan_after_s

    def register(self, info: NodeInfo, utilisation: dict[str, Any] | None = None) -> None:
        """Register or re-register a node as ACTIVE, publishing NODE_REGISTERED.

        A node the fleet launched keeps its pool, provider handle and billing; one the fleet
        has given up on (failed, being stopped, stopped) may not come back: NodeError.
        """
        now = self.clock()
        described = {
            "host": info.host,
            "labels": list(info.labels),
            "cpu_count": info.cpu_count,
            "memory_bytes": info.memory_bytes,
            "disk_bytes": info.disk_bytes,
            "gpus": list(info.gpus),
            "slots": info.slots,
            "utilisation": utilisation or {},
            "registered_at": now,
            "heartbeat_at": now,
            "idle_since": None,
        }
        with self.store.transaction() as conn:
            row = queries.get_node(conn, info.id)
            if row is None:
                queries.insert_node(
                    conn,
                    {
                        **described,
                        "id": info.id,
                        "provider": info.provider,
                        "pool": info.pool,
                        "cost_per_hour": info.cost_per_hour,
                        "status": NodeStatus.ACTIVE.value,
                        "status_changed_at": now,
                        "billing_since": now,
                    },
                )
            else:
                current = NodeStatus(row["status"])
                managed = row["pool"] is not None and row["provider_id"] is not None
                if managed and current in (NodeStatus.FAILED, NodeStatus.TERMINATING, NodeStatus.TERMINATED):
                    raise NodeRefused(
                        f"node {info.id} was {current.value} by the fleet and may not register again; "
                        "the fleet launches a new node instead"
                    )
                # A node that was draining stays so through a restart of its worker or a spell of silence.
                draining = row["draining_since"] is not None and current is not NodeStatus.TERMINATED
                target = NodeStatus.DRAINING if draining and current is NodeStatus.LOST else NodeStatus.ACTIVE
                if current in (NodeStatus.DRAINING, NodeStatus.DRAINED):
                    target = current
                if current is not target:
                    transition(current, target, node=info.id)
                    queries.set_node_status(conn, info.id, target.value, now, expected=current.value, billing=True)
                extra = {} if managed else {"provider": info.provider, "cost_per_hour": info.cost_per_hour}
                if not draining:
                    extra["draining_since"] = None
                queries.update_node(conn, info.id, **described, **extra)
            self.bus.publish("NODE_REGISTERED", {"node": info.id, "host": info.host, "provider": info.provider})

    def heartbeat(self, node_id: str, utilisation: dict[str, Any]) -> NodeStatus | None:
        """Record a heartbeat; return the node's status (None if unknown: the agent must register).

        The dead-man switch's second half: a machine the fleet launched is told to stop
        (TERMINATING) once no coordinator has held the leader lease for `orphan_after_s`,
        since nobody is left to stop it (the first half, a node that cannot heartbeat at
        all, is its agent's: zeroloop.cluster.agent).
        """
        now = self.clock()
        with self.store.transaction() as conn:
            status = queries.record_heartbeat(conn, node_id, utilisation, now)
            if status in _ORPHANABLE and self.orphan_after_s:
                leaderless_s = self._leaderless_s(conn, now)
                if leaderless_s is not None and leaderless_s >= self.orphan_after_s:
                    row = queries.get_node(conn, node_id)
                    if row is not None and row["pool"] is not None and row["provider_id"] is not None:
                        why = f"no coordinator for {leaderless_s:.0f} s (cluster.orphan_after_s): the node stops itself"
                        if self.move(conn, row, NodeStatus.TERMINATING, last_error=why):
                            status = NodeStatus.TERMINATING.value
        return NodeStatus(status) if status is not None else None

    @staticmethod
    def _leaderless_s(conn: Connection, now: float) -> float | None:
        """How long no process has held the leader lease (seconds), or None while one does or none ever did."""
        lease = lease_queries.get_lease(conn, LEADER_LEASE)
        if lease is None or (lease["holder"] is not None and lease["expires_at"] > now):
            return None
        return now - float(lease["expires_at"])

    def move(self, conn: Connection, row: dict[str, Any], target: NodeStatus, **values: Any) -> bool:
        """Move the node of `row` to `target` inside the caller's transaction, billing as the status implies.

        NodeError if the change is illegal; False if the node changed meanwhile (a lost race).
        """
        current = NodeStatus(row["status"])
        transition(current, target, node=row["id"])
        managed = row.get("pool") is not None
        was, will = billed(current, managed=managed), billed(target, managed=managed)
        billing = None if was == will else will
        if target is NodeStatus.DRAINING and current is not NodeStatus.LOST:
            values.setdefault("draining_since", self.clock())  # remembered through silence and restarts
        elif target is NodeStatus.ACTIVE:
            values.setdefault("draining_since", None)  # undrained
        moved = queries.set_node_status(
            conn, row["id"], target.value, self.clock(), expected=current.value, billing=billing, **values
        )
        if moved and managed and target in (NodeStatus.TERMINATED, NodeStatus.FAILED):
            # The fleet gave this machine its server token; a machine that is gone needs it no more.
            token_queries.revoke_node_tokens(conn, row["id"], self.clock())
        return moved

    def set_status(self, node_id: str, target: NodeStatus, **values: Any) -> NodeStatus:
        """Move a node to `target` (e.g. DRAINING from the CLI); NodeError if unknown, illegal or changed meanwhile."""
        with self.store.transaction() as conn:
            row = queries.get_node(conn, node_id)
            if row is None:
                raise NodeError(f"no node {node_id!r} is registered; see `zeroloop nodes ls`")
            if not self.move(conn, row, target, **values):
                raise NodeError(f"node {node_id} changed while it was being moved to {target}; try again")
        return target

    def leave(self, node_id: str) -> bool:
        """Mark a cleanly stopped node TERMINATED (it registers again when started); False if unknown or already so."""
        with self.store.transaction() as conn:
            row = queries.get_node(conn, node_id)
            # A worker the fleet is stopping leaves too: its machine is going, its worker is gone.
            if row is None or NodeStatus(row["status"]) not in (*LIVE, NodeStatus.LOST, NodeStatus.TERMINATING):
                return False
            return self.move(conn, row, NodeStatus.TERMINATED)

    def get(self, node_id: str) -> dict[str, Any] | None:
        """One node's row, or None."""
        with self.store.read() as conn:
            return queries.get_node(conn, node_id)

    def list_nodes(self, statuses: tuple[NodeStatus, ...] | None = None) -> list[dict[str, Any]]:
        """Every node, or those in `statuses`."""
        with self.store.read() as conn:
            return queries.list_nodes(conn, tuple(s.value for s in statuses) if statuses else None)

    def mark_lost(self, conn: Connection, row: dict[str, Any], requeue: Requeue, reason: str) -> bool:
        """Inside the caller's transaction: mark a live node LOST, publish NODE_LOST, re-queue its jobs."""
        if not self.move(conn, row, NodeStatus.LOST):
            return False  # it heartbeated or changed meanwhile
        now = self.clock()
        self.bus.publish(
            "NODE_LOST",
            {"node": row["id"], "silent_s": max(0.0, now - row["heartbeat_at"]), "reason": reason},
            dedup_key=f"node-lost:{row['id']}:{row['heartbeat_at']}",
        )
        requeue(row["id"])
        return True

    def detect_lost(self, lost_after_s: float, requeue: Requeue, fence: Fence | None = None) -> list[str]:
        """Mark nodes silent for more than `lost_after_s` seconds LOST and re-queue their jobs; return their ids.

        Each node is handled in its own transaction: its status change, its NODE_LOST event
        and `requeue(node_id)` (the queue's re-queue, joining the transaction) commit together.
        `fence(conn)` (the leader's lease guard) runs first in each, so a deposed leader changes nothing.
        """
        now = self.clock()
        with self.store.read() as conn:
            silent = queries.silent_nodes(conn, now - lost_after_s, tuple(s.value for s in LIVE))
        lost = []
        for row in silent:
            with self.store.transaction() as conn:
                if fence is not None:
                    fence(conn)
                if self.mark_lost(conn, row, requeue, f"no heartbeat for {now - row['heartbeat_at']:.0f} s"):
                    lost.append(row["id"])
        return lost
