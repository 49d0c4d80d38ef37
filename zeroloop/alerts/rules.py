"""Operational alerts: the events a person on call must hear about, said in one line each.

A durable consumer on the leader turns each operational event into a one-line summary,
logs it at WARNING (INFO for good news), and, when `alerts.command` is set, runs that
command with `{event}`, `{summary}` and `{json}` replaced (each shell-quoted), e.g. a
curl to a chat webhook. A failing alert command is logged and retried by the bus like
any failing handler, then dead-lettered: alerts are never silently lost.

Which events are operational, how each is said and how loud it is (info, warning,
critical: the log level), is declared with each event type in
`zeroloop.events.catalogue` (`Alerting`, or `Quiet` for routine ones); this module only
reads it. The events that call for action belong to a rule (`RULES`: crash loop, dead
jobs and growing dead letters, an open circuit, a paused pipeline, a lost node or leader,
the budget reached, an orphan machine, failed launches and evacuations, corrupt artifacts,
a full disk, a production rollback, a plateau, a selfplay quality warning, no promotion for
hours: see `zeroloop.alerts.checks`); those alerts also go to the webhooks of
`alerts.webhooks`, deduplicated and rate-limited per rule (see `zeroloop.alerts.webhooks`),
with their severity.
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
from collections.abc import Callable
from typing import Any

from zeroloop.alerts.webhooks import Alert, Webhooks
from zeroloop.config import AlertSettings
from zeroloop.errors import AlertError
from zeroloop.events import catalogue
from zeroloop.events.bus import Event
from zeroloop.events.catalogue import Alerting, Severity
from zeroloop.events.consumer import ConsumerSpec
from zeroloop.events.wiring import declare

log = logging.getLogger(__name__)

NAME = "alerts"

# Derived from the catalogue alone: each event type declares there, beside its payload,
# whether and how it alerts, so no fault is left off this channel by a table forgotten here.
_ALERTING: dict[str, Alerting] = {name: a for name, a in catalogue.ALERTING.items() if isinstance(a, Alerting)}
HANDLES = tuple(_ALERTING)
declare(NAME, handles=HANDLES)

RULES: dict[str, tuple[str, Callable[[dict[str, Any]], str]]] = {
    name: (a.rule, a.key) for name, a in _ALERTING.items() if a.rule is not None and a.key is not None
}
"""Which rule an event type raises, and what its alerts are about (the key deduplication goes by)."""

_LOG_LEVEL = {Severity.INFO: logging.INFO, Severity.WARNING: logging.WARNING, Severity.CRITICAL: logging.ERROR}


def summary(event: Event) -> str:
    """The one-line description of an operational event."""
    return _ALERTING[event.type].summary(event.payload)


def severity(event: Event) -> Severity:
    """How loud the event is: its type's severity, INFO when this event is not an alert (see `is_alert`)."""
    alerting = _ALERTING[event.type]
    return alerting.severity if alerting.alerts(event.payload) else Severity.INFO


def is_alert(event: Event) -> bool:
    """Whether someone should hear of `event`: not a lease given up on a clean stop, nor a promotion that went well."""
    return _ALERTING[event.type].alerts(event.payload)


def rule_of(event: Event) -> str | None:
    """The alert rule `event` raises, or None when it is only logged."""
    alerting = _ALERTING.get(event.type)
    return alerting.rule if alerting is not None and alerting.alerts(event.payload) else None


class Alerts:
    """Logs operational events, hands them to the configured alert command, and sends rule alerts to webhooks."""

    def __init__(self, settings: AlertSettings, webhooks: Webhooks | None = None) -> None:
        self.settings = settings
        self.webhooks = webhooks if webhooks is not None else Webhooks(settings)
        self.sent = 0

    def spec(self) -> ConsumerSpec:
        """The durable consumer of operational events; new deployments start at the end of the log."""
        return ConsumerSpec(NAME, self.handle, types=HANDLES, start="latest")

    def handle(self, event: Event) -> None:
        """Log the alert and run the alert command, if one is configured; a clean stop is only logged."""
        line = summary(event)
        if not is_alert(event):
            log.info("%s", line)
            return
        loudness = severity(event)
        log.log(_LOG_LEVEL[loudness], "alert: %s", line)
        if self.settings.command:
            self._run(event, line)
        rule = rule_of(event)
        if rule is not None:
            key = RULES[event.type][1](event.payload)
            alert = Alert(rule, key, event.type, event.id, line, dict(event.payload), event.created_at, loudness.value)
            self.webhooks.offer(alert)
        self.sent += 1

    def _run(self, event: Event, line: str) -> None:
        assert self.settings.command is not None
        values = {
            "event": shlex.quote(event.type),
            "summary": shlex.quote(line),
            "json": shlex.quote(json.dumps({"type": event.type, "summary": line, "payload": event.payload})),
        }
        command = self.settings.command.format_map(values)
        try:
            done = subprocess.run(
                ["sh", "-c", command], capture_output=True, text=True, timeout=self.settings.timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            raise AlertError(f"alert command ran past {self.settings.timeout_s:g} s") from None
        if done.returncode != 0:
            raise AlertError(f"alert command exited {done.returncode}: {done.stderr.strip()[:300]}")
