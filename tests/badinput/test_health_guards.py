"""Health that is not only on paper: no leader, no node for queued work, or only stale daemons is not healthy."""

from __future__ import annotations

from tests.helpers import FakeClock
from zeroloop.app import App
from zeroloop.cluster.health import HealthInputs, HealthLevel, health_level, health_score, issues
from zeroloop.cluster.leases import LEADER
from zeroloop.store.queries import daemons as daemon_queries


def test_each_missing_part_caps_the_score_and_says_why() -> None:
    cases = {
        "leader": HealthInputs(leader_present=False),
        "no live node": HealthInputs(jobs_waiting=3, nodes_total=2, nodes_available=0),
        "none of 2 has reported": HealthInputs(daemons_total=2, daemons_stale=["n/a", "n/b"]),
    }
    for words, inputs in cases.items():
        assert health_level(health_score(inputs)) is HealthLevel.UNHEALTHY, words
        assert any(words in issue for issue in issues(inputs)), (words, issues(inputs))
    some_stale = HealthInputs(daemons_total=2, daemons_stale=["n/a"])
    assert health_score(some_stale) == 1.0 and "1 stopped reporting" in issues(some_stale)[0]
    assert health_score(HealthInputs(jobs_waiting=3, nodes_total=1, nodes_available=1)) == 1.0


def _daemon(app: App, name: str, state: str, updated_at: float) -> None:
    row = {"node": "n1", "name": name, "state": state, "restarts": 0, "health": {}, "updated_at": updated_at}
    with app.store.transaction() as conn:
        daemon_queries.upsert_daemon(conn, row)


def test_the_monitor_reads_the_leader_and_stale_daemon_records(app: App) -> None:
    clock = FakeClock()
    app.health.clock = app.leases.clock = clock
    assert not app.health.inputs().leader_present
    assert app.leases.acquire(LEADER) is not None
    _daemon(app, "fresh", "running", clock.now)
    _daemon(app, "quiet", "stopped", clock.now - 3600)  # stopped cleanly: its record may rest
    inputs = app.health.inputs()
    assert inputs.leader_present and inputs.daemons_total == 1 and inputs.daemons_stale == []
    assert app.health.assess().level is HealthLevel.HEALTHY
    clock.advance(app.health.daemon_fresh_s + 1)  # the running daemon's process died without a word
    app.leases.acquire(LEADER)
    report = app.health.assess()
    assert report.inputs.daemons_stale == ["n1/fresh"] and report.level is HealthLevel.UNHEALTHY
