"""Idle shutdown: decisions on constructed inputs, and the applier with a fake provider."""

from __future__ import annotations

import sqlalchemy as sa

from tests.helpers import FakeClock
from zeroloop.app import App
from zeroloop.cluster.nodes import NodeInfo, Nodes, NodeStatus
from zeroloop.config import IdleSettings, PoolSettings
from zeroloop.fleet.idle import Action, IdleDecision, IdleNode, IdleShutdown, decide
from zeroloop.queue.manager import JobQueue
from zeroloop.store.queries import pipelines as decision_queries
from zeroloop.store.schema import events

NOW = 100_000.0
SETTINGS = IdleSettings(
    dry_run=False,
    threshold_s={"vast": 900.0, "lambda": 1800.0, "default": 1200.0},
    min_nodes={"default": 0, "lambda": 1},
    drain_period_s=300.0,
)
POOLS = {
    "cheap": PoolSettings(kind="slurm", idle_s=300.0, drain_s=60.0),
    "big": PoolSettings(kind="slurm", idle_s=3000.0, drain_s=60.0),
    "kept": PoolSettings(kind="slurm", scale_down=False),
    "gpu": PoolSettings(kind="slurm", min_nodes=1, max_nodes=4, idle_s=900.0),
}


def node(node_id: str, provider: str = "vast", *, idle_for: float | None = 1000.0, **kwargs: object) -> IdleNode:
    """A node that last ran a job `idle_for` seconds ago (None: it is running one now)."""
    fields: dict[str, object] = {"status": NodeStatus.ACTIVE, "utilisation": {"gpu_pct": 0.0}}
    if idle_for is None:
        fields["leased_jobs"] = 1
        fields["last_job_at"] = NOW
    else:
        fields["last_job_at"] = NOW - idle_for
        fields["idle_since"] = NOW - idle_for
    fields.update(kwargs)
    return IdleNode(node_id, provider, **fields)  # type: ignore[arg-type]


def actions(nodes: list[IdleNode], *, settings: IdleSettings = SETTINGS) -> dict[str, Action]:
    found = {}
    for decision in decide(nodes, now=NOW, settings=settings, pools=POOLS):
        if decision.action is not Action.MARK_IDLE:
            found[decision.node.id] = decision.action
    return found


def test_hand_started_workers_follow_the_providers_listed_in_idle_threshold_s() -> None:
    nodes = [node("v", "vast"), node("l", "lambda"), node("l2", "lambda"), node("x", "other", idle_for=1100)]
    assert actions(nodes) == {"v": Action.DRAIN, "l": Action.KEEP, "l2": Action.KEEP, "x": Action.KEEP}
    nodes = [node("l", "lambda", idle_for=2000), node("l2", "lambda", idle_for=1900), node("x", "other", idle_for=1300)]
    # lambda keeps one node: the one idle the shortest time stays
    assert actions(nodes) == {"l": Action.DRAIN, "l2": Action.KEEP, "x": Action.DRAIN}


def test_a_hand_started_worker_is_never_stopped_for_idleness_by_default() -> None:
    # A laptop's `zeroloop run` must not stop itself behind its owner's back: nothing lists its provider.
    decisions = decide([node("laptop", "local", idle_for=10 * 86400.0)], now=NOW, settings=IdleSettings())
    (kept,) = [d for d in decisions if d.action is not Action.MARK_IDLE]
    assert kept.action is Action.KEEP and "idle.threshold_s" in kept.reason


def test_scale_down_is_on_by_default_for_a_pool_with_the_shipped_settings() -> None:
    # What zeroloop launches, zeroloop stops: no dry run, and a pool declared with defaults scales down.
    assert IdleSettings().dry_run is False
    pool = PoolSettings(kind="skypilot")
    assert pool.scale_down is True
    rented = node("r", "skypilot", pool="cloud", idle_for=pool.idle_s + 1)
    decisions = decide([rented], now=NOW, settings=IdleSettings(), pools={"cloud": pool})
    assert [d.action for d in decisions if d.action is not Action.MARK_IDLE] == [Action.DRAIN]


def test_thresholds_are_keyed_by_pool_not_by_the_pools_provider_kind() -> None:
    # Two pools of the same kind: each follows its own idle_s.
    nodes = [node("c", "slurm", pool="cheap", idle_for=400.0), node("b", "slurm", pool="big", idle_for=400.0)]
    assert actions(nodes) == {"c": Action.DRAIN, "b": Action.KEEP}
    assert actions([node("k", "slurm", pool="kept", idle_for=1e6)]) == {"k": Action.KEEP}


def test_idleness_is_read_from_jobs_not_from_the_machines_load() -> None:
    # A box loaded by something else (a shared machine) is still idle when it ran no job.
    loaded = node("loaded", "slurm", pool="cheap", idle_for=400.0, utilisation={"cpu_pct": 100.0, "gpu_pct": 95.0})
    # A node that finished a job a minute ago is busy, however long ago idle_since was first recorded.
    recent = node("recent", "slurm", pool="cheap", idle_for=60.0, idle_since=NOW - 5000.0, utilisation={})
    assert actions([loaded, recent]) == {"loaded": Action.DRAIN, "recent": Action.KEEP}
    drained = {d.node.id: d for d in decide([loaded], now=NOW, settings=SETTINGS, pools=POOLS)}
    assert drained["loaded"].node.evidence() == {"cpu_pct": 100.0, "gpu_pct": 95.0}  # kept as evidence


def test_a_node_never_given_a_job_is_idle_from_its_registration() -> None:
    fresh = IdleNode("n", "slurm", NodeStatus.ACTIVE, registered_at=NOW - 200.0, pool="cheap")
    old = IdleNode("o", "slurm", NodeStatus.ACTIVE, registered_at=NOW - 400.0, pool="cheap")
    assert actions([fresh, old]) == {"n": Action.KEEP, "o": Action.DRAIN}


def test_a_drained_node_stops_at_once_and_a_draining_one_after_drain_s_unless_it_holds_an_only_copy() -> None:
    nodes = [
        node("early", "slurm", pool="cheap", status=NodeStatus.DRAINING, status_changed_at=NOW - 30),
        node("late", "slurm", pool="cheap", status=NodeStatus.DRAINING, status_changed_at=NOW - 60),
        node("done", "slurm", pool="cheap", status=NodeStatus.DRAINED, status_changed_at=NOW - 1),
        node("data", "slurm", pool="cheap", status=NodeStatus.DRAINED, status_changed_at=NOW - 1000, sole_artifacts=2),
        node("busy", "slurm", pool="cheap", idle_for=None, status=NodeStatus.DRAINING, status_changed_at=NOW - 999),
    ]
    assert actions(nodes) == {
        "early": Action.KEEP,
        "late": Action.TERMINATE,
        "done": Action.TERMINATE,
        "data": Action.KEEP,
        "busy": Action.KEEP,
    }


def test_disabled_decides_nothing() -> None:
    assert decide([node("v")], now=NOW, settings=IdleSettings(enabled=False)) == []


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


def _acts(decisions: list[IdleDecision]) -> list[Action]:
    return [d.action for d in decisions if d.action is not Action.MARK_IDLE]


def test_idle_node_is_drained_then_terminated_with_cost_tracked_and_the_decisions_recorded(app: App) -> None:
    clock = FakeClock()
    registry = _fleet(app, clock)
    provider = FakeProvider()
    idle = IdleShutdown(app.store, app.bus, registry, SETTINGS, terminate=provider.terminate, clock=clock)
    assert [d.action for d in idle.run_once()] == [Action.MARK_IDLE, Action.KEEP]
    assert registry.get("v1")["idle_since"] == clock.now  # type: ignore[index]
    clock.advance(900)
    assert _acts(idle.run_once()) == [Action.DRAIN]
    assert registry.get("v1")["status"] == "draining"  # type: ignore[index]
    clock.advance(300)
    assert _acts(idle.run_once()) == [Action.TERMINATE]
    assert provider.terminated == ["v1"]
    assert provider.reasons == ["idle 1200 s, draining for 300 s"]
    assert idle.saved_cost_per_hour == 0.4
    assert _idle_events(app) == [
        {"node": "v1", "provider": "vast", "idle_s": 1200.0, "dry_run": False, "cost_saved_per_hour": 0.4}
    ]
    with app.store.read() as conn:
        recorded = [(d["kind"], d["outcome"]) for d in decision_queries.list_decisions(conn, "fleet:vast")]
    assert recorded == [("scale_down", "terminate"), ("scale_down", "drain")]


def test_a_node_that_runs_jobs_between_two_looks_is_not_idle(app: App) -> None:
    # The jobs table says when the node last worked: a job claimed and finished between two
    # ticks (no lease at either) keeps it, on both backends.
    clock = FakeClock()
    registry = _fleet(app, clock)
    queue = JobQueue(app.store, app.bus, app.settings, clock=clock)
    provider = FakeProvider()
    idle = IdleShutdown(app.store, app.bus, registry, SETTINGS, terminate=provider.terminate, clock=clock)
    idle.run_once()
    clock.advance(800)
    job = queue.enqueue("selfplay", "c4_2p", {})
    lease = queue.claim("v1")
    assert lease is not None and lease.job.id == job.id
    clock.advance(50)
    queue.complete(job.id, lease.token, {})
    clock.advance(200)  # 1050 s since registration, 200 s since the job
    assert _acts(idle.run_once()) == [Action.KEEP]
    assert registry.get("v1")["idle_since"] == clock.now - 200  # type: ignore[index]
    clock.advance(700)
    assert _acts(idle.run_once()) == [Action.DRAIN]


def test_a_pools_machine_follows_its_pool_and_a_busy_looking_one_still_shrinks(app: App) -> None:
    clock = FakeClock()
    registry = Nodes(app.store, app.bus, clock=clock)
    info = NodeInfo("p1", "h", "slurm", 1, 1, 1, cost_per_hour=1.0, pool="cheap")
    registry.register(info, {"cpu_pct": 100.0})  # loaded by something else
    provider = FakeProvider()
    idle = IdleShutdown(
        app.store, app.bus, registry, IdleSettings(), terminate=provider.terminate, pools=POOLS, clock=clock
    )
    clock.advance(301)
    assert _acts(idle.run_once()) == [Action.DRAIN]
    clock.advance(60)
    assert _acts(idle.run_once()) == [Action.TERMINATE]
    assert provider.terminated == ["p1"]
    with app.store.read() as conn:
        (drain,) = [d for d in decision_queries.list_decisions(conn, "fleet:cheap") if d["outcome"] == "drain"]
    assert drain["evidence"]["utilisation"] == {"cpu_pct": 100.0}


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
    decisions = decide([*pool_nodes, by_hand], now=NOW, settings=SETTINGS, pools=POOLS)
    found = {d.node.id: (d.action, d.reason) for d in decisions if d.action is not Action.MARK_IDLE}
    assert found["p1"][0] is Action.DRAIN  # longest idle goes first
    assert found["p2"] == (Action.KEEP, "min nodes: pool:gpu keeps 1")
    assert found["h1"][0] is Action.DRAIN  # started by hand: idle.min_nodes of slurm (default 0)
