"""Alert delivery to webhooks: generic JSON or Slack-compatible, deduplicated and rate-limited per rule.

An alert of one rule about one thing (a node, a daemon, a config key: its key) is sent
once per `alerts.dedup_s`; and one rule sends at most one alert per `alerts.rate_limit_s`,
so a storm (forty nodes lost at once) reaches the channel as one message that says how
many more were held back. Every alert is still logged and shown on the dashboard.

Each POST has a timeout (`alerts.webhook_timeout_s`) and a bounded number of tries, so
one delivery takes at most attempts x (timeout + wait) seconds of the consumer's worker
thread and never the daemon's event loop. When a webhook still fails, AlertError goes
to the bus, which retries the event later; webhooks that already took it are not sent
it again. The state lives in the leader's memory: after a failover an alert may be sent
once more. Webhook URLs often carry a token, so logs and errors show only their host.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zeroloop.config import AlertSettings, WebhookSettings
from zeroloop.errors import AlertError

log = logging.getLogger(__name__)

_REMEMBERED_EVENTS = 1000  # event ids whose deliveries are remembered, against re-delivery by the bus


@dataclass(frozen=True)
class Alert:
    """One alert: its rule, what it is about (key), the event that raised it and its one-line summary."""

    rule: str
    key: str
    event_type: str
    event_id: int
    summary: str
    payload: dict[str, Any] = field(default_factory=dict)
    at: float = 0.0  # when the event happened (epoch seconds)
    severity: str = "warning"  # info, warning or critical (zeroloop.events.catalogue.Severity)


def redact(url: str) -> str:
    """A webhook URL safe to log: its scheme and host only (paths and queries often hold tokens)."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}/..."


def body_of(alert: Alert, fmt: str, held_back: int) -> dict[str, Any]:
    """The JSON body one webhook gets: the alert as an object, or Slack's `{"text": ...}`."""
    more = f" ({held_back} more {alert.rule} alert(s) held back by the rate limit)" if held_back else ""
    if fmt == "slack":
        return {"text": f"[zeroloop] {alert.severity} {alert.rule}: {alert.summary}{more}"}
    return {
        "rule": alert.rule,
        "severity": alert.severity,
        "key": alert.key,
        "event": alert.event_type,
        "event_id": alert.event_id,
        "summary": alert.summary,
        "payload": alert.payload,
        "at": alert.at,
        "held_back": held_back,
    }


class Webhooks:
    """Sends alerts to the configured webhooks (clock: epoch seconds and sleep: seconds, both injectable)."""

    def __init__(
        self,
        settings: AlertSettings,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.sleep = sleep
        self.sent = 0
        self._last_of_key: dict[tuple[str, str], float] = {}
        self._last_of_rule: dict[str, float] = {}
        self._held_back: dict[str, int] = {}
        self._delivered: OrderedDict[int, set[int]] = OrderedDict()  # event id -> indexes of webhooks that took it

    def offer(self, alert: Alert) -> bool:
        """Send `alert` unless a rule, deduplication or the rate limit holds it back; True when it was sent.

        Raises AlertError when a webhook still fails after its tries (the bus retries the event).
        """
        if not self.settings.webhooks or alert.rule not in self.settings.rules:
            return False
        now = self.clock()
        done = self._delivered.get(alert.event_id)
        if done is None:  # a first delivery, not the bus retrying one that partly failed
            last = self._last_of_key.get((alert.rule, alert.key))
            if last is not None and now - last < self.settings.dedup_s:
                log.info("alert %s about %s already sent %.0f s ago: not sent again", alert.rule, alert.key, now - last)
                return False
            last_rule = self._last_of_rule.get(alert.rule)
            if last_rule is not None and now - last_rule < self.settings.rate_limit_s:
                self._held_back[alert.rule] = self._held_back.get(alert.rule, 0) + 1
                log.info("alert %s held back by its rate limit (%g s)", alert.rule, self.settings.rate_limit_s)
                return False
            done = set()
            self._remember(alert.event_id, done)
        elif len(done) == len(self.settings.webhooks):
            return False  # the bus delivered the event again after every webhook took it
        held_back = self._held_back.get(alert.rule, 0)
        failures = []
        for index, hook in enumerate(self.settings.webhooks):
            if index in done:
                continue
            problem = self._post(hook, body_of(alert, hook.format, held_back))
            if problem is None:
                done.add(index)
            else:
                failures.append(problem)
        if failures:
            raise AlertError(f"alert {alert.rule} about {alert.key} not delivered: {'; '.join(failures)}")
        self._last_of_key[(alert.rule, alert.key)] = now
        self._last_of_rule[alert.rule] = now
        self._held_back.pop(alert.rule, None)
        self._forget_before(now - max(self.settings.dedup_s, self.settings.rate_limit_s))
        self.sent += 1
        return True

    def _post(self, hook: WebhookSettings, body: dict[str, Any]) -> str | None:
        """POST `body` with bounded tries; None on success, else why it failed (the URL redacted)."""
        url = hook.url.get_secret_value()
        shown = redact(url)
        problem = ""
        for attempt in range(1, self.settings.webhook_attempts + 1):
            try:
                status = self._send(url, body)
                if status < 300:
                    return None
                problem = f"webhook {shown} answered {status}"
            except (OSError, http.client.HTTPException) as exc:
                # The exception's text may quote the URL: only its kind is reported.
                problem = f"webhook {shown} failed: {type(exc).__name__}"
            log.warning("%s (try %d of %d)", problem, attempt, self.settings.webhook_attempts)
            if attempt < self.settings.webhook_attempts:
                self.sleep(self.settings.webhook_retry_s)
        return f"{problem} after {self.settings.webhook_attempts} tries"

    def _send(self, url: str, body: dict[str, Any]) -> int:
        """POST once and return the status (each connect and read waits at most alerts.webhook_timeout_s)."""
        parts = urllib.parse.urlsplit(url)
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        connection = kind(parts.hostname or "", parts.port, timeout=self.settings.webhook_timeout_s)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {"Content-Type": "application/json", "User-Agent": "zeroloop-alerts"}
        try:
            connection.request("POST", target, body=json.dumps(body).encode(), headers=headers)
            answer = connection.getresponse()
            answer.read()
            return answer.status
        finally:
            connection.close()

    def _remember(self, event_id: int, done: set[int]) -> None:
        self._delivered[event_id] = done
        while len(self._delivered) > _REMEMBERED_EVENTS:
            self._delivered.popitem(last=False)

    def _forget_before(self, moment: float) -> None:
        """Drop deduplication entries too old to hold anything back (keeps memory bounded)."""
        for key in [key for key, at in self._last_of_key.items() if at < moment]:
            del self._last_of_key[key]
