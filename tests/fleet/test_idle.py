"""Idle shutdown: decisions on constructed inputs, and the applier with a fake provider."""

from __future__ import annotations

import sqlalchemy as sa

from tests.helpers import FakeClock
from zeroloop.app import App
from zeroloop.cluster.nodes import NodeInfo, Nodes, NodeStatus
from zeroloop.config import IdleSettings
from zeroloop.fleet.idle import (
    Action,
    IdleNode,
    IdleShutdown,
    decide,
)
from zeroloop.store.schema import events

NOW = 100_000.0
SETTINGS = IdleSettings(
    dry_run=False,
    threshold_s={"vast": 900.0, "lambda": 1800.0, "default": 1200.0},
    min_nodes={"default": 0, "lambda": 1},
    drain_period_s=300.0,
)


def node(node_id: str, provider: str = "vast", *, idle_for: float | None = 1000.0, **kwargs: object) -> IdleNode:
    idle_since = None if idle_for is None else NOW - idle_for
    fields: dict[str, object] = {"status": NodeStatus.ACTIVE, "utilisation": {"gpu_pct": 0.0}}
    fields.update(kwargs)
    return IdleNode(node_id, provider, idle_since=idle_since, **fields)  # type: ignore[arg-type]


def actions(nodes: list[IdleNode], *, pending: int = 0, settings: IdleSettings = SETTINGS) -> dict[str, Action]:
    return {d.node.id: d.action for d in decide(nodes, now=NOW, settings=settings, pending_work=pending)}


def test_threshold_depends_on_the_provider() -> None:
    nodes = [node("v", "vast"), node("l", "lambda"), node("l2", "lambda"), node("x", "other", idle_for=1100)]
    assert actions(nodes) == {"v": Action.DRAIN, "l": Action.KEEP, "l2": Action.KEEP, "x": Action.KEEP}
    nodes = [node("l", "lambda", idle_for=2000), node("l2", "lambda", idle_for=1900), node("x", "other", idle_for=1300)]
    # lambda keeps one node: the one idle the shortest time stays
    assert actions(nodes) == {"l": Action.DRAIN, "l2": Action.KEEP, "x": Action.DRAIN}


def test_pending_work_blocks_draining_and_termination() -> None:
    nodes = [node("v"), node("d", status=NodeStatus.DRAINING, status_changed_at=NOW - 1000)]
    assert actions(nodes, pending=3) == {"v": Action.KEEP, "d": Action.KEEP}


def test_busy_nodes_and_newly_idle_nodes() -> None:
    nodes = [
        node("gpu", utilisation={"gpu_pct": 50.0}, idle_for=None),
        node("job", leased_jobs=1),
        node("cpu", utilisation={"cpu_pct": 80.0}),
        node("new", idle_for=None),
    ]
    assert actions(nodes) == {
        "gpu": Action.KEEP,
        "job": Action.CLEAR_IDLE,
        "cpu": Action.CLEAR_IDLE,
        "new": Action.MARK_IDLE,
    }


def test_drained_nodes_terminate_after_the_drain_period_unless_they_hold_the_only_copy() -> None:
    nodes = [
        node("early", status=NodeStatus.DRAINING, status_changed_at=NOW - 100),
        node("late", status=NodeStatus.DRAINING, status_changed_at=NOW - 300),
        node("data", status=NodeStatus.DRAINING, status_changed_at=NOW - 1000, sole_artifacts=2),
    ]
    assert actions(nodes) == {"early": Action.KEEP, "late": Action.TERMINATE, "data": Action.KEEP}


def test_disabled_decides_nothing() -> None:
    assert decide([node("v")], now=NOW, settings=IdleSettings(enabled=False), pending_work=0) == []


class FakeProvider:
    name = "vast"

    def __init__(self) -> None:
        self.terminated: list[str] = []
        self.reasons: list[str] = []

    def terminate(self, target: IdleNode, reason: str) -> None:
        self.terminated.append(target.id)
        self.reasons.append(reason)


def _fleet(app: App, clock: FakeClock) -> Nodes:
    registry = Nodes(app.store, app.bus, clock=clock)
    registry.register(NodeInfo("v1", "h", "vast", 1, 1, 1, cost_per_hour=0.4), {"gpu_pct": 0.0})
    return registry


def _idle_events(app: App) -> list[dict[str, object]]:
    with app.store.read() as conn:
        return [
            r.payload for r in conn.execute(sa.select(events.c.payload).where(events.c.type == "NODE_IDLE_SHUTDOWN"))
        ]


def test_idle_node_is_marked_drained_then_terminated_with_cost_tracked(app: App) -> None:
    clock = FakeClock()
    registry = _fleet(app, clock)
    provider = FakeProvider()
    idle = IdleShutdown(app.store, app.bus, registry, SETTINGS, terminate=provider.terminate, clock=clock)
    assert [d.action for d in idle.run_once()] == [Action.MARK_IDLE]
    clock.advance(900)
    assert [d.action for d in idle.run_once()] == [Action.DRAIN]
    clock.advance(300)
    assert [d.action for d in idle.run_once()] == [Action.TERMINATE]
    assert provider.terminated == ["v1"]
    assert provider.reasons == ["idle and drained for 300 s"]
    assert idle.saved_cost_per_hour == 0.4
    assert _idle_events(app) == [
        {"node": "v1", "provider": "vast", "idle_s": 1200.0, "dry_run": False, "cost_saved_per_hour": 0.4}
    ]


def test_dry_run_reports_and_changes_nothing(app: App) -> None:
    clock = FakeClock()
    registry = _fleet(app, clock)
    provider = FakeProvider()
    settings = SETTINGS.model_copy(update={"dry_run": True})
    idle = IdleShutdown(app.store, app.bus, registry, settings, terminate=provider.terminate, clock=clock)
    idle.run_once()
    clock.advance(1000)
    idle.run_once()
    idle.run_once()  # the same idle period is reported once
    node_row = registry.get("v1")
    assert node_row is not None
    assert node_row["status"] == "active"
    assert provider.terminated == []
    assert [e["dry_run"] for e in _idle_events(app)] == [True]


def test_a_pools_nodes_keep_the_pools_min_nodes_not_the_providers() -> None:
    pool_nodes = [node("p1", "slurm", pool="gpu", idle_for=2000.0), node("p2", "slurm", pool="gpu", idle_for=1500.0)]
    by_hand = node("h1", "slurm", idle_for=2000.0)
    decisions = decide([*pool_nodes, by_hand], now=NOW, settings=SETTINGS, pending_work=0, pool_min={"gpu": 1})
    found = {d.node.id: (d.action, d.reason) for d in decisions}
    assert found["p1"][0] is Action.DRAIN  # longest idle goes first
    assert found["p2"] == (Action.KEEP, "min nodes: pool:gpu keeps 1")
    assert found["h1"][0] is Action.DRAIN  # started by hand: idle.min_nodes of slurm (default 0)
