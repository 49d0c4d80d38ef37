"""Alerts reach webhooks on loopback once, deduplicated and rate-limited per rule, with bounded tries."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from tests.helpers import FakeClock, serve_http
from zeroloop.alerts.rules import RULES, Alerts, rule_of
from zeroloop.alerts.webhooks import Alert, Webhooks, redact
from zeroloop.config import ALERT_RULES, AlertSettings, WebhookSettings
from zeroloop.errors import AlertError, ConfigError
from zeroloop.events.bus import Event

SECRET = "T000/B000/very-secret-token"


@dataclass
class Receiver:
    """A webhook receiver on loopback: what it was sent, and the status it answers with."""

    url: str
    bodies: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    status: int = 200


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["content-length"])
            state.bodies.append(json.loads(self.rfile.read(length)))
            state.paths.append(self.path)
            self.send_response(state.status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            return

    with serve_http(Handler) as url:
        state.url = url
        yield state


def _event(event_id: int, event_type: str, payload: dict[str, Any]) -> Event:
    return Event(id=event_id, type=event_type, payload=payload, source="test", node="n1", created_at=1.0)


def _lost(event_id: int, node: str) -> Event:
    return _event(event_id, "NODE_LOST", {"node": node, "silent_s": 61.0})


def _alerts(receiver: Receiver, clock: FakeClock, sleeps: list[float], **overrides: Any) -> Alerts:
    hooks = [
        WebhookSettings(url=f"{receiver.url}/json/{SECRET}"),  # type: ignore[arg-type]
        WebhookSettings(url=f"{receiver.url}/slack/{SECRET}", format="slack"),  # type: ignore[arg-type]
    ]
    settings = AlertSettings(webhooks=hooks, **{"rate_limit_s": 300.0, "dedup_s": 3600.0, **overrides})
    return Alerts(settings, Webhooks(settings, clock=clock, sleep=sleeps.append))


def test_an_alert_reaches_both_webhooks_once_and_is_not_repeated_within_its_rate_limit(receiver: Receiver) -> None:
    clock, sleeps = FakeClock(), []
    alerts = _alerts(receiver, clock, sleeps)
    alerts.handle(_lost(1, "w1"))
    assert receiver.paths == [f"/json/{SECRET}", f"/slack/{SECRET}"]
    posted, slack = receiver.bodies
    assert (posted["rule"], posted["key"], posted["event"], posted["event_id"]) == ("node_lost", "w1", "NODE_LOST", 1)
    assert posted["summary"].startswith("node w1 lost") and posted["held_back"] == 0
    assert slack == {"text": "[zeroloop] warning node_lost: " + posted["summary"]}
    alerts.handle(_lost(1, "w1"))  # the bus delivers the same event again
    clock.advance(10)
    alerts.handle(_lost(2, "w1"))  # the same node again: deduplicated
    alerts.handle(_lost(3, "w2"))  # another node within the rule's rate limit: held back
    alerts.handle(_lost(4, "w3"))
    assert len(receiver.bodies) == 2
    clock.advance(300)
    alerts.handle(_lost(5, "w1"))  # past the rate limit, within the deduplication window: still not sent
    alerts.handle(_lost(6, "w4"))
    assert len(receiver.bodies) == 4
    assert receiver.bodies[2]["key"] == "w4" and receiver.bodies[2]["held_back"] == 2
    assert "2 more node_lost alert(s) held back" in receiver.bodies[3]["text"]
    assert alerts.webhooks.sent == 2 and sleeps == []
    clock.advance(3600)
    alerts.handle(_lost(7, "w1"))  # past the deduplication window: the same node is news again
    assert [body.get("key") for body in receiver.bodies[4:]] == ["w1", None]


def test_rules_hold_each_other_back_only_within_themselves(receiver: Receiver) -> None:
    alerts = _alerts(receiver, FakeClock(), [])
    alerts.handle(_lost(1, "w1"))
    alerts.handle(_event(2, "CIRCUIT_OPENED", {"key": "stage:train", "failures": 3}))
    alerts.handle(_event(3, "CIRCUIT_CLOSED", {"key": "stage:train"}))  # good news: logged, no rule
    promoted = {"config_key": "c4", "model_id": "m2", "artifact_sha256": "b" * 64, "previous_model_id": "m1"}
    alerts.handle(_event(4, "MODEL_PROMOTED", {**promoted, "reason": "policy"}))  # a promotion that went well
    alerts.handle(_event(5, "MODEL_PROMOTED", {**promoted, "reason": "rollback"}))
    rules = [body["rule"] for body in receiver.bodies if "rule" in body]
    assert rules == ["node_lost", "circuit_open", "production_regression"]


def test_only_the_enabled_rules_reach_the_webhooks(receiver: Receiver) -> None:
    alerts = _alerts(receiver, FakeClock(), [], rules=["crash_loop"])
    alerts.handle(_lost(1, "w1"))
    assert receiver.bodies == []
    alerts.handle(
        _event(2, "DAEMON_CRASH_LOOP", {"node": "n1", "daemon": "pipeline", "restarts": 5, "last_error": "x"})
    )
    assert [body.get("rule") for body in receiver.bodies] == ["crash_loop", None]  # json, then slack's text


def test_a_failing_webhook_is_tried_a_bounded_number_of_times_and_never_logs_its_secret(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    clock, sleeps = FakeClock(), []
    alerts = _alerts(receiver, clock, sleeps, webhook_attempts=3, webhook_retry_s=2.0)
    receiver.status = 500
    with caplog.at_level(logging.INFO), pytest.raises(AlertError) as failed:
        alerts.handle(_lost(1, "w1"))
    assert len(receiver.bodies) == 6 and sleeps == [2.0, 2.0, 2.0, 2.0]  # 3 tries for each of the 2 webhooks
    assert "answered 500 after 3 tries" in str(failed.value)
    assert SECRET not in str(failed.value) and SECRET not in caplog.text
    assert redact(f"{receiver.url}/json/{SECRET}") == "http://127.0.0.1/..."
    receiver.status = 200
    alerts.handle(_lost(1, "w1"))  # the bus retries the event: now it gets through, once per webhook
    assert len(receiver.bodies) == 8 and alerts.webhooks.sent == 1
    alerts.handle(_lost(1, "w1"))
    assert len(receiver.bodies) == 8


def test_a_webhook_that_never_answers_costs_at_most_its_timeout_per_try() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # connections are accepted by the kernel and never answered
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        settings = AlertSettings(
            webhooks=[WebhookSettings(url=url)],  # type: ignore[arg-type]
            webhook_timeout_s=0.2,
            webhook_attempts=2,
        )
        sleeps: list[float] = []
        alert = Alert("node_lost", "w1", "NODE_LOST", 1, "node w1 lost")
        with pytest.raises(AlertError, match="TimeoutError after 2 tries"):
            Webhooks(settings, sleep=sleeps.append).offer(alert)
        assert sleeps == [settings.webhook_retry_s]
    finally:
        silent.close()


def test_an_unknown_rule_in_the_settings_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown alert rule node_gone: choose from crash_loop"):
        AlertSettings(rules=["node_gone"])


def test_every_rule_has_an_event_and_every_alerting_event_a_rule() -> None:
    assert {rule for rule, _key in RULES.values()} == set(ALERT_RULES)
    assert rule_of(_lost(1, "w1")) == "node_lost"
    assert rule_of(_event(1, "LEADER_ELECTED", {"role": "leader", "node": "n1", "token": 1})) is None
