"""The alert checks: a pipeline that stopped promoting and growing dead letters are announced once each."""

from __future__ import annotations

import pytest

from tests.helpers import FakeClock, run_async
from zeroloop.alerts.checks import AlertChecks, alert_checks_daemon
from zeroloop.alerts.rules import Alerts, rule_of, summary
from zeroloop.app import App
from zeroloop.cluster.leases import LEADER
from zeroloop.config import AlertSettings
from zeroloop.daemons.daemon import DaemonContext, Leadership
from zeroloop.errors import LeaseError
from zeroloop.events.bus import Event
from zeroloop.store.queries import dead_letters as letter_queries
from zeroloop.store.queries import events as event_queries
from zeroloop.store.queries import pipelines as pipeline_queries

KEY = "tic_tac_toe_2p"
HOUR_S = 3600.0


def _events(app: App, event_type: str) -> list[Event]:
    with app.store.read() as conn:
        return [Event.from_row(row) for row in event_queries.latest(conn, types=(event_type,), limit=100)]


def _pipeline(app: App, now: float, *, last_promotion_at: float | None, paused: bool = False) -> None:
    with app.store.transaction() as conn:
        pipeline_queries.ensure_pipeline(conn, KEY, now)
        pipeline_queries.update_pipeline(conn, KEY, now, last_promotion_at=last_promotion_at, paused=paused)


def _letter(app: App, now: float) -> None:
    event_id = app.bus.publish("PIPELINE_RESUMED", {"config_key": KEY, "reason": "test"})
    with app.store.transaction() as conn:
        letter_queries.insert_dead_letter(
            conn, event_id=event_id, consumer="alerts", status="pending", attempts=5, error="boom", traceback="",
            now=now, next_retry_at=now + 60,
        )  # fmt: skip


def test_a_pipeline_that_stops_promoting_is_announced_once_per_stall(app: App, clock: FakeClock) -> None:
    checks = AlertChecks(app.store, app.bus, AlertSettings(no_promotion_hours=6), clock=clock)
    _pipeline(app, clock(), last_promotion_at=clock())
    clock.advance(5 * HOUR_S)
    assert checks.check() == []
    clock.advance(2 * HOUR_S)
    assert checks.check() == ["PROMOTION_STALLED"]
    assert checks.check() == []
    (stalled,) = _events(app, "PROMOTION_STALLED")
    assert stalled.payload["hours"] == pytest.approx(7.0) and rule_of(stalled) == "no_promotion"
    assert summary(stalled).startswith(f"{KEY}: no model promoted for 7.0 h")
    alerts = Alerts(AlertSettings())
    alerts.spec().handler(stalled)  # the operations daemon's alerts consumer takes it
    assert alerts.sent == 1
    assert AlertChecks(app.store, app.bus, AlertSettings(no_promotion_hours=6), clock=clock).check() == [
        "PROMOTION_STALLED"
    ]  # a new leader looks again: the bus's dedup key keeps it to one event
    assert len(_events(app, "PROMOTION_STALLED")) == 1
    _pipeline(app, clock(), last_promotion_at=clock())  # a promotion ends the stall
    clock.advance(7 * HOUR_S)
    assert checks.check() == ["PROMOTION_STALLED"]
    assert len(_events(app, "PROMOTION_STALLED")) == 2


def test_paused_and_never_promoted_pipelines(app: App, clock: FakeClock) -> None:
    checks = AlertChecks(app.store, app.bus, AlertSettings(no_promotion_hours=1), clock=clock)
    _pipeline(app, clock(), last_promotion_at=None, paused=True)
    clock.advance(2 * HOUR_S)
    assert checks.check() == []  # paused: the pause was its own alert
    _pipeline(app, clock(), last_promotion_at=None, paused=False)
    assert checks.check() == []  # never promoted: measured from now, when it was first seen running
    clock.advance(2 * HOUR_S)
    assert checks.check() == ["PROMOTION_STALLED"]
    assert AlertChecks(app.store, app.bus, AlertSettings(no_promotion_hours=None), clock=clock).check() == []


def test_growing_dead_letters_are_announced_when_they_grow(app: App, clock: FakeClock) -> None:
    checks = AlertChecks(app.store, app.bus, AlertSettings(), clock=clock)
    _letter(app, clock())
    assert checks.check() == []  # the first look only counts
    assert checks.check() == []
    _letter(app, clock())
    _letter(app, clock())
    assert checks.check() == ["DEAD_LETTERS_GROWING"]
    (growing,) = _events(app, "DEAD_LETTERS_GROWING")
    assert growing.payload == {"letters": 3, "previous": 1} and rule_of(growing) == "dead_letters"
    assert checks.check() == []


@run_async
async def test_the_daemon_publishes_only_while_this_process_leads(app: App, clock: FakeClock) -> None:
    _pipeline(app, clock() - 48 * HOUR_S, last_promotion_at=clock() - 48 * HOUR_S)
    follower = alert_checks_daemon(DaemonContext(app, Leadership(), clock))
    with pytest.raises(LeaseError):
        await follower.run_once()
    assert _events(app, "PROMOTION_STALLED") == []
    token = app.leases.acquire(LEADER)
    assert token is not None
    leader = alert_checks_daemon(DaemonContext(app, Leadership(held=True, token=token), clock))
    await leader.run_once()
    assert len(_events(app, "PROMOTION_STALLED")) == 1 and leader.details()["published"] == 1
