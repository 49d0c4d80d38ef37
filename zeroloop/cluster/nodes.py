"""The node registry: who is in the cluster, what each node has, and whether it is alive.

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

from zeroloop.daemons.daemon import Clock
from zeroloop.errors import ZeroloopError
from zeroloop.events.bus import EventBus
from zeroloop.events.wiring import declare
from zeroloop.store.database import Store
from zeroloop.store.queries import nodes as queries

declare("zeroloop.cluster.nodes", emits=("NODE_REGISTERED", "NODE_LOST"))

Requeue = Callable[[str], object]
Fence = Callable[[Connection], None]


class NodeError(ZeroloopError):
    """A node operation was refused: unknown node or an illegal status change."""


class NodeStatus(StrEnum):
    """A node's place in the cluster; persisted as `nodes.status`."""

    ACTIVE = "active"
    DRAINING = "draining"  # takes no new work; terminated once idle after the drain period
    LOST = "lost"  # missed its heartbeats; its leases were re-queued
    TERMINATED = "terminated"


_EDGES: dict[NodeStatus, frozenset[NodeStatus]] = {
    NodeStatus.ACTIVE: frozenset({NodeStatus.DRAINING, NodeStatus.LOST, NodeStatus.TERMINATED}),
    # Work arrived while draining (undrain), or it went silent, or the drain completed.
    NodeStatus.DRAINING: frozenset({NodeStatus.ACTIVE, NodeStatus.LOST, NodeStatus.TERMINATED}),
    # A lost or terminated node that registers again is active again (a new life, new leases).
    NodeStatus.LOST: frozenset({NodeStatus.ACTIVE, NodeStatus.TERMINATED}),
    NodeStatus.TERMINATED: frozenset({NodeStatus.ACTIVE}),
}


def transition(current: NodeStatus, target: NodeStatus, *, node: str = "node") -> NodeStatus:
    """Return `target` if `current -> target` is legal; raise NodeError otherwise."""
    if target not in _EDGES[current]:
        raise NodeError(f"node {node}: illegal status change {current} -> {target}")
    return target


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


class NodeRegistry:
    """Named operations on nodes over one store and bus (clock: epoch seconds, injectable)."""

    def __init__(self, store: Store, bus: EventBus, *, clock: Clock = time.time) -> None:
        self.store = store
        self.bus = bus
        self.clock = clock

    def register(self, info: NodeInfo, utilisation: dict[str, Any] | None = None) -> None:
        """Register or re-register a node as ACTIVE, publishing NODE_REGISTERED."""
        now = self.clock()
        row = {
            "id": info.id,
            "host": info.host,
            "provider": info.provider,
            "labels": list(info.labels),
            "cpu_count": info.cpu_count,
            "memory_bytes": info.memory_bytes,
            "disk_bytes": info.disk_bytes,
            "gpus": list(info.gpus),
            "cost_per_hour": info.cost_per_hour,
            "status": NodeStatus.ACTIVE.value,
            "utilisation": utilisation or {},
            "registered_at": now,
            "heartbeat_at": now,
            "idle_since": None,
            "status_changed_at": now,
        }
        with self.store.transaction() as conn:
            queries.upsert_node(conn, row)
            self.bus.publish("NODE_REGISTERED", {"node": info.id, "host": info.host, "provider": info.provider})

    def heartbeat(self, node_id: str, utilisation: dict[str, Any]) -> NodeStatus | None:
        """Record a heartbeat; return the node's status (None if unknown: the agent must register)."""
        with self.store.transaction() as conn:
            status = queries.record_heartbeat(conn, node_id, utilisation, self.clock())
        return NodeStatus(status) if status is not None else None

    def set_status(self, node_id: str, target: NodeStatus) -> NodeStatus:
        """Move a node to `target` (e.g. DRAINING from the CLI); NodeError if unknown or illegal."""
        with self.store.transaction() as conn:
            row = queries.get_node(conn, node_id)
            if row is None:
                raise NodeError(f"no node {node_id!r} is registered; see `zeroloop nodes ls`")
            current = NodeStatus(row["status"])
            transition(current, target, node=node_id)
            queries.set_node_status(conn, node_id, target.value, self.clock(), expected=current.value)
        return target

    def leave(self, node_id: str) -> bool:
        """Mark a cleanly stopped node TERMINATED (it registers again when started); False if unknown or already so."""
        with self.store.transaction() as conn:
            row = queries.get_node(conn, node_id)
            if row is None or row["status"] == NodeStatus.TERMINATED.value:
                return False
            current = NodeStatus(row["status"])
            transition(current, NodeStatus.TERMINATED, node=node_id)
            return bool(
                queries.set_node_status(
                    conn, node_id, NodeStatus.TERMINATED.value, self.clock(), expected=current.value
                )
            )

    def get(self, node_id: str) -> dict[str, Any] | None:
        """One node's row, or None."""
        with self.store.read() as conn:
            return queries.get_node(conn, node_id)

    def list_nodes(self, statuses: tuple[NodeStatus, ...] | None = None) -> list[dict[str, Any]]:
        """Every node, or those in `statuses`."""
        with self.store.read() as conn:
            return queries.list_nodes(conn, tuple(s.value for s in statuses) if statuses else None)

    def detect_lost(self, lost_after_s: float, requeue: Requeue, fence: Fence | None = None) -> list[str]:
        """Mark nodes silent for more than `lost_after_s` seconds LOST and re-queue their jobs; return their ids.

        Each node is handled in its own transaction: its status change, its NODE_LOST event
        and `requeue(node_id)` (the queue's re-queue, joining the transaction) commit together.
        `fence(conn)` (the leader's lease guard) runs first in each, so a deposed leader changes nothing.
        """
        now = self.clock()
        live = (NodeStatus.ACTIVE.value, NodeStatus.DRAINING.value)
        with self.store.read() as conn:
            silent = queries.silent_nodes(conn, now - lost_after_s, live)
        lost = []
        for row in silent:
            with self.store.transaction() as conn:
                if fence is not None:
                    fence(conn)
                if not queries.set_node_status(conn, row["id"], NodeStatus.LOST.value, now, expected=row["status"]):
                    continue  # it heartbeated or changed meanwhile
                self.bus.publish(
                    "NODE_LOST",
                    {"node": row["id"], "silent_s": max(0.0, now - row["heartbeat_at"])},
                    dedup_key=f"node-lost:{row['id']}:{row['heartbeat_at']}",
                )
                requeue(row["id"])
            lost.append(row["id"])
        return lost
