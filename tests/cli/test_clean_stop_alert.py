"""A clean stop that releases the leader lease is not an alert; losing the lease still is."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.helpers import FakeClock
from zeroloop.alerts.rules import Alerts, is_alert
from zeroloop.app import App
from zeroloop.cluster.leases import LEADER, LeaseManager
from zeroloop.config import AlertSettings
from zeroloop.events.bus import Event
from zeroloop.store.schema import events


def _lost_events(app: App) -> list[Event]:
    with app.store.read() as conn:
        rows = conn.execute(sa.select(events).where(events.c.type == "LEADER_LOST").order_by(events.c.id)).mappings()
        return [Event.from_row(row) for row in rows]


def test_release_on_a_clean_stop_runs_no_alert_command_and_logs_no_warning(
    app: App, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    a = LeaseManager(app.store, app.bus, holder="a", ttl_s=10, clock=clock)
    b = LeaseManager(app.store, app.bus, holder="b", ttl_s=10, clock=clock)
    token = a.acquire(LEADER)
    assert token is not None and a.release(LEADER, token)
    assert b.acquire(LEADER) is not None
    clock.advance(11)  # b dies silently; a takes over and records b's loss
    assert a.acquire(LEADER) is not None
    released, expired = _lost_events(app)
    assert released.payload["released"] is True and expired.payload["released"] is False
    target = tmp_path / "sent.txt"
    alerts = Alerts(AlertSettings(command=f"printf '%s\\n' {{summary}} >> {target}"))
    with caplog.at_level(logging.INFO, logger="zeroloop.alerts.rules"):
        alerts.handle(released)
        assert not is_alert(released)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.endswith("alerts")]
        assert not target.exists()
        alerts.handle(expired)
    assert target.read_text() == "b no longer holds the leader lease (token 2)\n"
    # Only the alert's own records: other loggers may log at INFO when an earlier test set the root level.
    records = [r for r in caplog.records if r.name == "zeroloop.alerts.rules"]
    assert [r.levelno for r in records] == [logging.INFO, logging.WARNING]
    assert "clean stop" in records[0].getMessage()
