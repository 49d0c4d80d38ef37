"""Every event type declares, beside its payload, whether and how it alerts; the alerts consumer derives from that.

The faults that were only logged (an orphan machine, a failed launch, a corrupt artifact,
a full disk, an upload a draining node cannot make) and the feedback decisions that had no
event (a plateau, a selfplay quality warning) reach the webhooks with their severity.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import BaseModel

from tests.helpers import FakeClock, serve_http
from tests.pipeline.test_feedback import FAST, FLAT, HOUR, World
from zeroloop.alerts.rules import HANDLES, RULES, Alerts, rule_of, severity, summary
from zeroloop.alerts.webhooks import Webhooks
from zeroloop.config import ALERT_RULES, AlertSettings, EvaluationSettings, Settings, WebhookSettings
from zeroloop.events.bus import Event
from zeroloop.events.catalogue import ALERTING, EVENT_TYPES, Alerting, Quiet, Severity
from zeroloop.pipeline.curriculum import Curriculum
from zeroloop.pipeline.quality import SelfplayQualityMonitor
from zeroloop.store.database import Store
from zeroloop.store.queries import artifacts as artifact_queries
from zeroloop.store.schema import events


def _value(annotation: Any) -> Any:
    """A plausible value of a payload field's type."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return _value(next(arg for arg in typing.get_args(annotation) if arg is not type(None)))
    if origin is list or annotation is list:
        return ["x"]
    if origin is dict or annotation is dict:
        return {"jobs": 1}
    return {str: "abcdef0123456789", int: 1, float: 1.5, bool: True}[annotation]


def example(event_type: str) -> dict[str, Any]:
    """A valid payload of `event_type`, every field filled."""
    model: type[BaseModel] = EVENT_TYPES[event_type]
    payload = {name: _value(field.annotation) for name, field in model.model_fields.items()}
    model.model_validate(payload)
    return payload


def _event(event_type: str, payload: dict[str, Any], event_id: int = 1) -> Event:
    return Event(id=event_id, type=event_type, payload=payload, source="test", node="n1", created_at=1.0)


def test_every_event_type_declares_whether_and_how_it_alerts() -> None:
    assert set(ALERTING) == set(EVENT_TYPES)
    for event_type, alerting in ALERTING.items():
        if isinstance(alerting, Quiet):
            assert alerting.why, event_type
            continue
        payload = example(event_type)
        line = alerting.summary(payload)
        assert line and "\n" not in line, event_type
        if alerting.rule is not None:
            assert alerting.rule in ALERT_RULES and alerting.key is not None
            assert alerting.key(payload), event_type
    # What the consumer handles is exactly what alerts, and every rule is raised by some event type.
    assert set(HANDLES) == {name for name, alerting in ALERTING.items() if isinstance(alerting, Alerting)}
    assert {rule for rule, _key in RULES.values()} == set(ALERT_RULES)


FAULTS = {
    "FLEET_ORPHAN_FOUND": ("orphan_found", Severity.CRITICAL),
    "NODE_LAUNCH_FAILED": ("launch_failed", Severity.WARNING),
    "ARTIFACT_CORRUPT": ("artifact_corrupt", Severity.CRITICAL),
    "DISK_SPACE_LOW": ("disk_space_low", Severity.WARNING),
    "EVACUATION_FAILED": ("evacuation_failed", Severity.CRITICAL),
    "PLATEAU_CHANGED": ("plateau", Severity.WARNING),
    "QUALITY_WARNING": ("quality_warning", Severity.WARNING),
    "FLEET_BUDGET_REACHED": ("budget_reached", Severity.WARNING),
    "DAEMON_CRASH_LOOP": ("crash_loop", Severity.CRITICAL),
}


@pytest.fixture
def received() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    bodies: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            return

    with serve_http(Handler) as url:
        yield url, bodies


def test_the_faults_that_were_only_logged_reach_the_webhook_with_their_severity(
    received: tuple[str, list[dict[str, Any]]],
) -> None:
    url, bodies = received
    settings = AlertSettings(webhooks=[WebhookSettings(url=f"{url}/hook")])  # type: ignore[list-item]
    alerts = Alerts(settings, Webhooks(settings, clock=FakeClock(), sleep=lambda _s: None))
    for event_id, event_type in enumerate(FAULTS, start=1):
        alerts.handle(_event(event_type, example(event_type), event_id))
    assert [(body["event"], body["rule"], body["severity"]) for body in bodies] == [
        (event_type, rule, loudness.value) for event_type, (rule, loudness) in FAULTS.items()
    ]


def test_good_news_of_an_alerting_type_is_logged_not_sent() -> None:
    cleared = _event("PLATEAU_CHANGED", {**example("PLATEAU_CHANGED"), "plateau": False})
    assert rule_of(cleared) is None and severity(cleared) is Severity.INFO
    assert "off its plateau" in summary(cleared)
    released = _event("LEADER_LOST", {"role": "leader", "node": "n1", "token": 2, "released": True})
    assert rule_of(released) is None
    assert rule_of(_event("LEADER_LOST", {"role": "leader", "node": "n1", "token": 2})) == "failover"


@pytest.fixture
def world(store: Store, settings: Settings) -> World:
    settings.evaluation = EvaluationSettings(
        velocity_window_s=HOUR, plateau_window_s=2 * HOUR, plateau_min_gain_elo=25, plateau_min_rounds=3
    )
    return World(store, settings)


def _published(store: Store, event_type: str) -> list[dict[str, Any]]:
    with store.read() as conn:
        query = sa.select(events.c.payload).where(events.c.type == event_type).order_by(events.c.id)
        return [dict(payload) for payload in conn.execute(query).scalars()]


def test_a_plateau_decision_is_announced_with_its_evidence(world: World) -> None:
    world.promote(FLAT, 300.0)
    for elo in (310.0, 305.0, 302.0, 312.0):
        world.clock.advance(HOUR / 2)
        world.promote(FLAT, elo)
    curriculum = Curriculum(world.store, world.settings, clock=world.clock, bus=world.bus)
    curriculum.tick()
    curriculum.tick()  # still flat: announced once
    (flat,) = _published(world.store, "PLATEAU_CHANGED")
    assert flat["config_key"] == FLAT and flat["plateau"] is True and flat["rounds"] == 5
    assert flat["gain_elo"] == pytest.approx(12.0) and "a plateau is under 25 Elo" in flat["reason"]
    world.clock.advance(600)
    world.promote(FLAT, 400.0)
    curriculum.tick()
    assert [p["plateau"] for p in _published(world.store, "PLATEAU_CHANGED")] == [True, False]


def test_a_quality_warning_is_announced_with_the_decision(world: World) -> None:
    monitor = SelfplayQualityMonitor(world.store, world.settings, clock=world.clock, bus=world.bus)
    for n, positions in enumerate((32 * 30, 32 * 8), start=1):
        with world.store.transaction() as conn:
            meta = {"games": 32, "positions": positions, "evaluations": positions * 100}
            artifact_queries.record_artifact(
                conn,
                {
                    "sha256": f"{n:064d}",
                    "kind": "game_batch",
                    "size_bytes": 1,
                    "config_key": FAST,
                    "meta": meta,
                    "created_at": world.clock(),
                },
            )
        world.clock.advance(1)
        monitor.tick()
    (warning,) = _published(world.store, "QUALITY_WARNING")
    assert warning["config_key"] == FAST and "games got shorter" in warning["warnings"][0]
    assert warning["figures"]["mean_moves"] == 8.0
