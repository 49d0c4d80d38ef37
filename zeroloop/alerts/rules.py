"""Operational alerts: the events a person on call must hear about, said in one line each.

A durable consumer on the leader turns each operational event into a one-line summary,
logs it at WARNING (INFO for good news), and, when `alerts.command` is set, runs that
command with `{event}`, `{summary}` and `{json}` replaced (each shell-quoted), e.g. a
curl to a chat webhook. A failing alert command is logged and retried by the bus like
any failing handler, then dead-lettered: alerts are never silently lost.

The events that call for action belong to a rule (`RULES`: crash loop, dead jobs and
growing dead letters, an open circuit, a paused pipeline, a lost node, the budget reached,
a production rollback, no promotion for hours: see `zeroloop.alerts.checks`);
those alerts also go to the webhooks of `alerts.webhooks`, deduplicated and rate-limited
per rule (see `zeroloop.alerts.webhooks`).
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
from zeroloop.events.bus import Event
from zeroloop.events.consumer import ConsumerSpec
from zeroloop.events.wiring import declare

log = logging.getLogger(__name__)

NAME = "alerts"

_SUMMARIES: dict[str, Callable[[dict[str, Any]], str]] = {
    "DAEMON_CRASH_LOOP": lambda p: (
        f"daemon {p['daemon']} on {p['node']} is FAILED after {p['restarts']} restarts: {p['last_error']}"
    ),
    "NODE_LOST": lambda p: f"node {p['node']} lost (silent for {p['silent_s']:.0f} s); its jobs were re-queued",
    "NODE_IDLE_SHUTDOWN": lambda p: (
        f"node {p['node']} ({p['provider']}) idle {p['idle_s']:.0f} s: "
        + ("would be terminated (dry run)" if p["dry_run"] else "terminated")
    ),
    "LEADER_ELECTED": lambda p: f"{p['node']} now holds the {p['role']} lease (token {p['token']})",
    "LEADER_LOST": lambda p: (
        f"{p['node']} released the {p['role']} lease (token {p['token']}) on a clean stop"
        if p.get("released")
        else f"{p['node']} no longer holds the {p['role']} lease (token {p['token']})"
    ),
    "CIRCUIT_OPENED": lambda p: f"circuit {p['key']} opened after {p['failures']} failures",
    "CIRCUIT_CLOSED": lambda p: f"circuit {p['key']} closed again",
    "ARTIFACT_CORRUPT": lambda p: f"artifact {p['artifact_sha256'][:12]} corrupt at {p['location']}; quarantined",
    "BACKPRESSURE_CHANGED": lambda p: (
        f"queue {p['queue_type']} backpressure {p['previous']} -> {p['level']} (depth {p['depth']})"
    ),
    "JOB_DEAD": lambda p: f"{p['job_type']} job {p['job_id']} of {p['config_key']} is dead: {p['error']}",
    "PIPELINE_PAUSED": lambda p: f"pipeline {p['config_key']} paused: {p['reason']}",
    "NODE_LAUNCHED": lambda p: f"pool {p['pool']} launched node {p['node']} ({p['provider_id']})",
    "NODE_LAUNCH_FAILED": lambda p: f"pool {p['pool']}: launch of node {p['node']} failed: {p['reason']}",
    "NODE_TERMINATED": lambda p: f"node {p['node']} of pool {p['pool']} is gone; it cost {p['cost']:.2f} in all",
    "FLEET_ORPHAN_FOUND": lambda p: (
        f"pool {p['pool']}: the provider bills machine {p['provider_id']} that zeroloop does not know ({p['action']})"
    ),
    "MODEL_PROMOTED": lambda p: (
        f"{p['config_key']}: production rolled back to {p['model_id']} from {p.get('previous_model_id') or 'none'}"
        if p["reason"] == "rollback"
        else f"{p['config_key']}: {p['model_id']} promoted to production ({p['reason']})"
    ),
    "PROMOTION_STALLED": lambda p: (
        f"{p['config_key']}: no model promoted for {p['hours']:.1f} h (production: {p.get('model_id') or 'none'})"
    ),
    "DEAD_LETTERS_GROWING": lambda p: (
        f"event dead letters growing: {p['letters']} pending or parked (was {p['previous']}); see `zeroloop dlq ls`"
    ),
    "FLEET_BUDGET_REACHED": lambda p: (
        f"pool {p['pool']}: {p['refused']} launch(es) refused: the fleet costs {p['cost_per_hour']:g}/h "
        f"of a budget of {p['budget_per_hour']:g}/h"
    ),
    "GARBAGE_COLLECTED": lambda p: (
        "garbage collected: "
        + ", ".join(f"{count} {what}" for what, count in sorted(p["counts"].items()) if count)
        + f" ({p['bytes_freed']} bytes freed)"
    ),
    "DISK_SPACE_LOW": lambda p: (
        f"node {p['node']} disk {p['disk_pct']:.0f}% full: {p['evicted_bytes']} bytes of cache evicted"
        + ("; new selfplay refused until space is freed" if p["selfplay_refused"] else "")
    ),
    "BACKUP_CREATED": lambda p: (
        f"backup {p['backup_id']} taken ({p['store_bytes']} bytes, {p['artifacts']} artifacts)"
        + (f"; deleted {len(p['pruned'])} older" if p["pruned"] else "")
    ),
}
_GOOD_NEWS = frozenset(
    {"LEADER_ELECTED", "CIRCUIT_CLOSED", "NODE_LAUNCHED", "NODE_TERMINATED", "GARBAGE_COLLECTED", "BACKUP_CREATED"}
)
HANDLES = tuple(_SUMMARIES)
declare(NAME, handles=HANDLES)

# Which rule an event raises, and what it is about (the key deduplication goes by).
RULES: dict[str, tuple[str, Callable[[dict[str, Any]], str]]] = {
    "DAEMON_CRASH_LOOP": ("crash_loop", lambda p: f"{p['daemon']}@{p['node']}"),
    "JOB_DEAD": ("dead_letters", lambda p: f"{p['config_key']}/{p['job_type']}"),
    "CIRCUIT_OPENED": ("circuit_open", lambda p: str(p["key"])),
    "PIPELINE_PAUSED": ("pipeline_paused", lambda p: str(p["config_key"])),
    "NODE_LOST": ("node_lost", lambda p: str(p["node"])),
    "FLEET_BUDGET_REACHED": ("budget_reached", lambda p: str(p["pool"])),
    "MODEL_PROMOTED": ("production_regression", lambda p: str(p["config_key"])),
    "PROMOTION_STALLED": ("no_promotion", lambda p: str(p["config_key"])),
    "DEAD_LETTERS_GROWING": ("dead_letters", lambda _p: "event dead letters"),
}


def summary(event: Event) -> str:
    """The one-line description of an operational event."""
    return _SUMMARIES[event.type](event.payload)


def is_alert(event: Event) -> bool:
    """Whether someone should hear of `event`: not a lease given up on a clean stop, nor a promotion that went well."""
    if event.type == "LEADER_LOST":
        return not event.payload.get("released")
    if event.type == "MODEL_PROMOTED":
        return bool(event.payload.get("reason") == "rollback")
    return True


def rule_of(event: Event) -> str | None:
    """The alert rule `event` raises, or None when it is only logged."""
    found = RULES.get(event.type)
    return found[0] if found and is_alert(event) else None


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
        log.log(logging.INFO if event.type in _GOOD_NEWS else logging.WARNING, "alert: %s", line)
        if self.settings.command:
            self._run(event, line)
        rule = rule_of(event)
        if rule is not None:
            key = RULES[event.type][1](event.payload)
            self.webhooks.offer(Alert(rule, key, event.type, event.id, line, dict(event.payload), event.created_at))
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
