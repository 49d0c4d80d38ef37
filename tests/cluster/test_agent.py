"""The node agent's stops: the dead-man switch, a refused token, the fleet's stop; evacuation that keeps failing;
and a drain that outlives silence and restarts. Time is a FakeClock; the stores are real, on both backends."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.helpers import FakeClock
from zeroloop.app import App
from zeroloop.artifacts.transfer import ArtifactKind
from zeroloop.cluster.agent import EXIT_ORPHANED, EXIT_REFUSED, NodeAgent
from zeroloop.cluster.leases import LEADER, LeaseManager
from zeroloop.cluster.nodes import NodeInfo, Nodes, NodeStatus
from zeroloop.config import ClusterSettings, Settings
from zeroloop.daemons.daemon import ExitRequest, HealthState
from zeroloop.errors import AuthError, StoreUnavailable
from zeroloop.store.queries import nodes as node_queries
from zeroloop.store.schema import events

INFO = NodeInfo("w1", "h", "cloud", 1, 1, 1, pool="gpu")


class FlakyNodes:
    """A NodePort whose heartbeats fail with `error` while it is set (a store or server away, a revoked token)."""

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.status: NodeStatus | None = NodeStatus.ACTIVE
        self.registered = 0
        self.left = 0

    def register(self, info: NodeInfo, utilisation: dict[str, Any] | None = None) -> None:
        if self.error is not None:
            raise self.error
        self.registered += 1

    def heartbeat(self, node_id: str, utilisation: dict[str, Any]) -> NodeStatus | None:
        if self.error is not None:
            raise self.error
        return self.status

    def leave(self, node_id: str) -> bool:
        self.left += 1
        return True


def _agent(nodes: Any, clock: FakeClock, *, orphan_after_s: float = 600.0, **kwargs: Any) -> NodeAgent:
    return NodeAgent(
        nodes,
        lambda: INFO,
        dict,
        10.0,
        clock=clock,
        exit_request=ExitRequest(),
        orphan_after_s=orphan_after_s,
        **kwargs,
    )


def _tick(agent: NodeAgent) -> None:
    asyncio.run(agent.run_once())


def test_a_fleet_machine_that_cannot_heartbeat_for_orphan_after_s_ends_its_process() -> None:
    clock, nodes = FakeClock(), FlakyNodes()
    agent = _agent(nodes, clock)
    _tick(agent)
    assert nodes.registered == 1
    nodes.error = StoreUnavailable("connection refused")
    for _ in range(59):  # 590 s of failed heartbeats: an outage to ride out
        clock.advance(10)
        _tick(agent)
    assert agent.exit.code is None
    assert agent.health().state is HealthState.UNHEALTHY  # but it says so meanwhile
    assert agent.health().details["unheard_s"] == 590.0
    clock.advance(10)
    _tick(agent)
    assert (agent.exit.code, agent.exit.force) == (EXIT_ORPHANED, False)  # it drains, then exits 3
    assert "nobody is left to stop this machine" in agent.exit.reason


def test_a_heartbeat_that_goes_through_again_resets_the_dead_man_switch() -> None:
    clock, nodes = FakeClock(), FlakyNodes()
    agent = _agent(nodes, clock)
    _tick(agent)
    nodes.error = StoreUnavailable("down")
    clock.advance(590)
    _tick(agent)
    nodes.error = None
    clock.advance(10)
    _tick(agent)
    nodes.error = StoreUnavailable("down again")
    clock.advance(590)
    _tick(agent)
    assert agent.exit.code is None and agent.health().state is HealthState.UNHEALTHY


def test_a_hand_started_worker_has_no_dead_man_switch() -> None:
    clock, nodes = FakeClock(), FlakyNodes()
    agent = _agent(nodes, clock, orphan_after_s=0.0)
    _tick(agent)
    nodes.error = StoreUnavailable("down")
    clock.advance(86400)
    _tick(agent)
    assert agent.exit.code is None


@pytest.mark.parametrize("refusal", [AuthError("token revoked"), AuthError("token expired")])
def test_a_refused_token_ends_the_process_at_once_with_a_non_zero_status(refusal: AuthError) -> None:
    clock, nodes = FakeClock(), FlakyNodes()
    agent = _agent(nodes, clock)
    _tick(agent)
    nodes.error = refusal
    _tick(agent)
    assert (agent.exit.code, agent.exit.force) == (EXIT_REFUSED, True)
    asyncio.run(_run_stopped(agent))
    assert nodes.left == 0  # no drain, no goodbye: the server refuses it anyway


async def _run_stopped(agent: NodeAgent) -> None:
    stop = asyncio.Event()
    stop.set()
    await agent.run(stop)


def test_the_fleet_stopping_the_node_asks_for_one_drain_with_status_zero() -> None:
    clock, nodes = FakeClock(), FlakyNodes()
    agent = _agent(nodes, clock)
    _tick(agent)
    nodes.status = NodeStatus.TERMINATING
    _tick(agent)
    _tick(agent)
    assert (agent.exit.code, agent.exit.force) == (0, False)
    assert agent.exit.requested.is_set()


def test_a_refused_registration_ends_the_process_instead_of_a_crash_loop(app: App) -> None:
    # The fleet gave the node up (failed, terminated): registering again is refused for good.
    registry = Nodes(app.store, app.bus)
    agent = _agent(registry, FakeClock())
    with app.store.transaction() as conn:
        node_queries.insert_node(conn, _managed_row("w1", NodeStatus.TERMINATED.value))
    _tick(agent)
    assert (agent.exit.code, agent.exit.force) == (EXIT_REFUSED, True)


def _managed_row(node_id: str, status: str, now: float = 0.0) -> dict[str, Any]:
    return {
        "id": node_id,
        "host": "h",
        "provider": "cloud",
        "pool": "gpu",
        "provider_id": f"vm-{node_id}",
        "labels": [],
        "cpu_count": 1,
        "memory_bytes": 1,
        "disk_bytes": 1,
        "gpus": [],
        "status": status,
        "utilisation": {},
        "registered_at": now,
        "heartbeat_at": now,
        "status_changed_at": now,
        "launched_at": now,
    }


def test_no_coordinator_for_orphan_after_s_stops_the_fleets_machines_but_not_hand_started_ones(app: App) -> None:
    clock = FakeClock()
    registry = Nodes(app.store, app.bus, clock=clock, orphan_after_s=600.0)
    with app.store.transaction() as conn:
        node_queries.insert_node(conn, _managed_row("rented", NodeStatus.ACTIVE.value, clock.now))
    registry.register(NodeInfo("laptop", "h", "local", 1, 1, 1))
    assert registry.heartbeat("rented", {}) is NodeStatus.ACTIVE  # no coordinator ever: nothing to judge by
    leases = LeaseManager(app.store, app.bus, holder="coordinator", ttl_s=15.0, clock=clock)
    token = leases.acquire(LEADER)
    assert token is not None
    clock.advance(100)
    assert leases.release(LEADER, token)  # a clean stop of the coordinator, e.g. to restart it
    clock.advance(599)
    assert registry.heartbeat("rented", {}) is NodeStatus.ACTIVE  # a restart takes less than that
    clock.advance(1)
    assert registry.heartbeat("rented", {}) is NodeStatus.TERMINATING
    assert registry.heartbeat("laptop", {}) is NodeStatus.ACTIVE
    row = registry.get("rented")
    assert row is not None and "no coordinator for 600 s" in row["last_error"]
    # A coordinator that comes back finds the machine being stopped; the fleet reconciles it.
    assert leases.acquire(LEADER) is not None


def test_the_orphan_setting_must_leave_the_coordinator_time_to_find_the_node_lost() -> None:
    from zeroloop.errors import ConfigError

    with pytest.raises(ConfigError, match=r"orphan_after_s \(30.0\) must be at least node_lost_after_s"):
        ClusterSettings(orphan_after_s=30.0)
    assert ClusterSettings(orphan_after_s=0.0).orphan_after_s == 0.0


def test_a_draining_node_that_was_lost_or_restarted_comes_back_draining(app: App) -> None:
    clock = FakeClock()
    registry = Nodes(app.store, app.bus, clock=clock)
    registry.register(INFO)
    registry.set_status("w1", NodeStatus.DRAINING)
    registry.register(INFO)  # its worker restarted
    assert registry.heartbeat("w1", {}) is NodeStatus.DRAINING
    clock.advance(120)
    assert registry.detect_lost(60, lambda _node: None) == ["w1"]
    registry.register(INFO)  # heard again after the silence
    assert registry.heartbeat("w1", {}) is NodeStatus.DRAINING
    registry.set_status("w1", NodeStatus.ACTIVE)  # undrained by hand: forgotten
    clock.advance(120)
    registry.detect_lost(60, lambda _node: None)
    registry.register(INFO)
    assert registry.heartbeat("w1", {}) is NodeStatus.ACTIVE


def test_an_evacuation_that_keeps_failing_is_announced_and_never_stops_the_heartbeat(
    tmp_path: Path, store_url: str
) -> None:
    blocked = tmp_path / "shared"
    blocked.write_text("not a directory: uploads fail")
    settings = Settings(
        data_dir=tmp_path / "data",
        store={"url": store_url},
        artifacts={"url": blocked.as_uri()},
        cluster={"node_id": "w1"},
    )
    with App(settings, upgrade=False) as app:
        clock = FakeClock()
        registry = Nodes(app.store, app.bus, clock=clock)
        registry.register(INFO)
        batch = tmp_path / "batch.npz"
        batch.write_bytes(b"games" * 100)
        app.artifacts.put(batch, ArtifactKind.GAME_BATCH)  # held on the node only: the shared location is broken
        registry.set_status("w1", NodeStatus.DRAINING)
        agent = _agent(registry, clock, evacuate=app.artifacts.evacuate, bus=app.bus)
        for _ in range(5):  # more than LoopDaemon's three errors in a row that would crash it
            clock.advance(10)
            _tick(agent)
        assert agent.consecutive_errors == 0 and agent.exit.code is None
        row = registry.get("w1")
        assert row is not None and row["status"] == "draining" and row["heartbeat_at"] == clock.now
        with app.store.read() as conn:
            query = sa.select(events.c.payload).where(events.c.type == "EVACUATION_FAILED")
            announced = [dict(payload) for payload in conn.execute(query).scalars()]
        assert len(announced) == 1 and announced[0]["node"] == "w1"  # once per distinct failure
        assert str(blocked) in announced[0]["error"] or "shared" in announced[0]["error"]
        assert "evacuation_error" in agent.details()
        blocked.unlink()  # the location is back: the next beat uploads it
        clock.advance(10)
        _tick(agent)
        assert agent.evacuated == 1 and "evacuation_error" not in agent.details()
