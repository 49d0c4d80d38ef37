"""The node list and agent: registration, heartbeats, lost detection with an injected clock."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from tests.helpers import FakeClock, run_async
from zeroloop.app import App
from zeroloop.cluster.agent import NodeAgent, NodeLostDetector, describe_node, utilisation
from zeroloop.cluster.leases import LEADER, LeaderElector, LeaseManager, leader_fence
from zeroloop.cluster.nodes import NodeError, NodeInfo, Nodes, NodeStatus, transition
from zeroloop.config import Settings
from zeroloop.daemons.daemon import Leadership
from zeroloop.errors import LeaseError
from zeroloop.store.schema import events


def _info(node_id: str = "n1") -> NodeInfo:
    return NodeInfo(node_id, "host1", "vast", 8, 32 * 2**30, 500 * 2**30, ["gpu"], [{"index": 0}], 0.5)


def _types(app: App) -> list[str]:
    with app.store.read() as conn:
        return [row.type for row in conn.execute(sa.select(events.c.type).order_by(events.c.id))]


def test_transitions_refuse_illegal_moves() -> None:
    assert transition(NodeStatus.LOST, NodeStatus.ACTIVE) is NodeStatus.ACTIVE
    with pytest.raises(NodeError, match="illegal status change lost -> drained"):
        transition(NodeStatus.LOST, NodeStatus.DRAINED)


def test_silent_nodes_are_lost_once_and_their_jobs_requeued(app: App) -> None:
    clock = FakeClock()
    registry = Nodes(app.store, app.bus, clock=clock)
    registry.register(_info("n1"))
    registry.register(_info("n2"))
    requeued: list[str] = []
    clock.advance(50)
    assert registry.heartbeat("n2", {"cpu_pct": 5.0}) is NodeStatus.ACTIVE
    clock.advance(20)  # n1 silent 70 s, n2 20 s
    assert registry.detect_lost(60, requeued.append) == ["n1"]
    assert requeued == ["n1"]
    assert registry.detect_lost(60, requeued.append) == []  # already lost: not again
    node = registry.get("n1")
    assert node is not None
    assert node["status"] == "lost"
    assert registry.heartbeat("n1", {}) is NodeStatus.LOST  # the agent sees this and re-registers
    assert _types(app) == ["NODE_REGISTERED", "NODE_REGISTERED", "NODE_LOST"]


def test_a_failing_requeue_leaves_the_node_unmarked(app: App) -> None:
    clock = FakeClock()
    registry = Nodes(app.store, app.bus, clock=clock)
    registry.register(_info("n1"))
    clock.advance(100)

    def broken(_node: str) -> None:
        raise RuntimeError("queue down")

    with pytest.raises(RuntimeError):
        registry.detect_lost(60, broken)
    node = registry.get("n1")
    assert node is not None
    assert node["status"] == "active"
    assert _types(app) == ["NODE_REGISTERED"]


def test_drain_and_unknown_nodes(app: App) -> None:
    registry = Nodes(app.store, app.bus)
    registry.register(_info())
    registry.set_status("n1", NodeStatus.DRAINING)
    assert [row["status"] for row in registry.list_nodes()] == ["draining"]
    with pytest.raises(NodeError, match="no node 'ghost'"):
        registry.set_status("ghost", NodeStatus.DRAINING)


@run_async
async def test_agent_registers_heartbeats_and_reregisters_after_being_lost(app: App) -> None:
    clock = FakeClock()
    registry = Nodes(app.store, app.bus, clock=clock)
    agent = NodeAgent(registry, lambda: _info("n1"), lambda: {"cpu_pct": 1.0}, 10, clock=clock)
    detector = NodeLostDetector(registry, 60, lambda _node: None, 10, clock=clock)
    await agent.run_once()
    clock.advance(10)
    await agent.run_once()
    node = registry.get("n1")
    assert node is not None
    assert (node["heartbeat_at"], agent.registrations) == (clock(), 1)
    clock.advance(61)
    await detector.run_once()
    assert detector.lost_total == 1
    await agent.run_once()
    assert agent.registrations == 2
    node = registry.get("n1")
    assert node is not None
    assert node["status"] == "active"


@run_async
async def test_a_clean_stop_leaves_the_cluster_instead_of_being_taken_for_lost(app: App) -> None:
    clock = FakeClock()
    registry = Nodes(app.store, app.bus, clock=clock)
    agent = NodeAgent(registry, lambda: _info("n1"), lambda: {"cpu_pct": 1.0}, 10, clock=clock)
    detector = NodeLostDetector(registry, 60, lambda _node: None, 10, clock=clock)
    await agent.run_once()
    stop = asyncio.Event()
    stop.set()
    await agent.run(stop)  # stopped: no more ticks, then it leaves
    node = registry.get("n1")
    assert node is not None and node["status"] == "terminated"
    clock.advance(600)
    await detector.run_once()
    assert detector.lost_total == 0 and "NODE_LOST" not in _types(app)
    assert not registry.leave("n1") and not registry.leave("nobody")
    await agent.run_once()  # started again: registers afresh
    node = registry.get("n1")
    assert node is not None and node["status"] == "active" and agent.registrations == 2


def test_probes_describe_this_machine(settings: Settings) -> None:
    info = describe_node(settings, gpus=[])
    assert info.cpu_count >= 1
    assert info.memory_bytes > 0
    assert info.disk_bytes > 0
    load = utilisation(settings)
    assert 0 <= load["memory_pct"] <= 100
    assert isinstance(load["pid"], int)


def test_a_deposed_leader_marks_nothing_lost(app: App) -> None:
    clock = FakeClock()
    registry = Nodes(app.store, app.bus, clock=clock)
    registry.register(_info("n1"))
    leases = LeaseManager(app.store, app.bus, holder="old", ttl_s=10, clock=clock)
    leadership = Leadership()
    assert LeaderElector(leases, leadership).tick()
    clock.advance(100)
    LeaseManager(app.store, app.bus, holder="new", ttl_s=10, clock=clock).acquire(LEADER)
    with pytest.raises(LeaseError, match="stale"):
        registry.detect_lost(60, lambda _node: None, leader_fence(leases, leadership))
    node = registry.get("n1")
    assert node is not None
    assert node["status"] == "active"
