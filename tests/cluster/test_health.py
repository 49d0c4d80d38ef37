"""The health score, its levels and the pause rule, on constructed inputs; and the monitor on a store."""

from __future__ import annotations

import pytest

from tests.helpers import FakeClock
from zeroloop.app import App
from zeroloop.cluster.breakers import CircuitBreakers
from zeroloop.cluster.health import (
    HealthInputs,
    HealthLevel,
    HealthMonitor,
    components,
    health_level,
    health_score,
    issues,
    should_pause_pipeline,
)
from zeroloop.cluster.nodes import NodeInfo, Nodes, NodeStatus
from zeroloop.config import HealthSettings
from zeroloop.errors import ConfigError
from zeroloop.store.queries import nodes as node_queries


def test_a_quiet_system_is_fully_healthy() -> None:
    assert health_score(HealthInputs()) == 1.0
    assert health_level(1.0) is HealthLevel.HEALTHY


def test_the_formula_weights_each_component() -> None:
    inputs = HealthInputs(
        nodes_total=4,
        nodes_available=2,  # A = 0.5
        breakers_total=4,
        breakers_open=1,
        breakers_half_open=2,  # C = 1 - 2/4 = 0.5
        jobs_completed=3,
        jobs_failed=1,  # E = 0.75
        circuits_opened=4,
        circuits_closed=1,  # R = 0.25
    )
    assert components(inputs) == {"availability": 0.5, "circuits": 0.5, "errors": 0.75, "recovery": 0.25}
    assert health_score(inputs) == pytest.approx(0.35 * 0.5 + 0.25 * 0.5 + 0.25 * 0.75 + 0.15 * 0.25)


def test_a_failed_critical_daemon_caps_the_score() -> None:
    assert health_score(HealthInputs(critical_daemons_failed=["n/queue_reaper"])) == 0.5
    assert health_level(0.5) is HealthLevel.UNHEALTHY


@pytest.mark.parametrize(
    ("score", "level"),
    [
        (0.8, HealthLevel.HEALTHY),
        (0.79, HealthLevel.DEGRADED),
        (0.6, HealthLevel.DEGRADED),
        (0.59, HealthLevel.UNHEALTHY),
        (0.4, HealthLevel.UNHEALTHY),
        (0.39, HealthLevel.CRITICAL),
    ],
)
def test_levels(score: float, level: HealthLevel) -> None:
    assert health_level(score) is level


def test_pause_and_resume_have_hysteresis() -> None:
    settings = HealthSettings(pause_below_score=0.4, resume_above_score=0.6)
    paused = False
    trace = []
    for score in (0.9, 0.41, 0.39, 0.5, 0.6, 0.61, 0.45, 0.3):
        paused = should_pause_pipeline(score, paused, settings)
        trace.append(paused)
    assert trace == [False, False, True, True, True, False, False, True]


def test_settings_refuse_a_resume_score_below_the_pause_score() -> None:
    with pytest.raises(ConfigError, match="hysteresis"):
        HealthSettings(pause_below_score=0.6, resume_above_score=0.5)


def test_the_monitor_reads_nodes_breakers_and_events(app: App) -> None:
    clock = FakeClock()
    nodes = Nodes(app.store, app.bus, clock=clock)
    for node_id in ("a", "b"):
        nodes.register(NodeInfo(node_id, "h", "local", 1, 1, 1))
    clock.advance(100)
    nodes.detect_lost(60, lambda _node: None)
    breakers = CircuitBreakers(app.store, app.bus, app.settings.health, clock=clock)
    for _ in range(app.settings.health.breaker_failure_threshold):
        breakers.record_failure("stage:train")
    monitor = HealthMonitor(app.store, app.settings.health, daemon_fresh_s=30, clock=clock)
    inputs = monitor.inputs()
    assert (inputs.nodes_total, inputs.nodes_available) == (2, 0)
    assert (inputs.breakers_total, inputs.breakers_open, inputs.circuits_opened) == (1, 1, 1)
    report = monitor.assess()
    assert report.score == pytest.approx(0.35 * 0 + 0.25 * 0 + 0.25 * 1 + 0.15 * 0)
    assert report.level is HealthLevel.CRITICAL
    assert monitor.should_pause_pipeline()
    assert any("unavailable" in issue for issue in report.issues)


def test_nodes_on_their_way_read_as_starting_not_as_a_failure() -> None:
    """The first minutes: work is queued and the launched workers have not registered yet."""
    starting = HealthInputs(jobs_waiting=5, nodes_total=2, nodes_available=0, nodes_starting=2)
    assert not starting.stranded and health_score(starting) == 1.0
    assert any("2 starting" in issue for issue in issues(starting))
    assert not any("unavailable" in issue for issue in issues(starting))
    one_up = HealthInputs(jobs_waiting=5, nodes_total=3, nodes_available=1, nodes_starting=2)
    assert health_score(one_up) == 1.0
    gone = HealthInputs(jobs_waiting=5, nodes_total=2, nodes_available=0, nodes_starting=0)  # they never came
    assert gone.stranded and health_score(gone) <= 0.5


def test_the_monitor_says_starting_while_launched_nodes_register(app: App) -> None:
    clock = FakeClock()
    app.leases.acquire("leader")  # a coordinator runs
    app.queue.enqueue("selfplay", "tic_tac_toe_2p")
    with app.store.transaction() as conn:
        for node_id in ("q1", "q2"):
            node_queries.upsert_node(
                conn,
                {"id": node_id, "host": "", "provider": "local", "pool": "quickstart", "profile": "training_node",
                 "labels": [], "cpu_count": 1, "memory_bytes": 1, "disk_bytes": 0, "gpus": [], "slots": 1,
                 "status": NodeStatus.REQUESTED.value, "utilisation": {}, "registered_at": clock(),
                 "heartbeat_at": clock(), "status_changed_at": clock(), "launched_at": clock()},
            )  # fmt: skip
    monitor = HealthMonitor(app.store, app.settings.health, daemon_fresh_s=30, clock=app.clock)
    report = monitor.assess()
    assert report.inputs.nodes_starting == 2 and report.level is HealthLevel.STARTING, report
    app.nodes.register(NodeInfo("q1", "h", "local", 1, 1, 1))
    assert monitor.assess().level is HealthLevel.HEALTHY
