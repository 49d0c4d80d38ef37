"""Operational alerts: the events a person on call must hear about, said in one line each.

A durable consumer on the leader turns each operational event into a one-line summary,
logs it at WARNING (INFO for good news), and, when `alerts.command` is set, runs that
command with `{event}`, `{summary}` and `{json}` replaced (each shell-quoted), e.g. a
curl to a chat webhook. A failing alert command is logged and retried by the bus like
any failing handler, then dead-lettered: alerts are never silently lost.
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
from collections.abc import Callable
from typing import Any

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


def summary(event: Event) -> str:
    """The one-line description of an operational event."""
    return _SUMMARIES[event.type](event.payload)


def is_alert(event: Event) -> bool:
    """Whether someone should hear of `event`: not when a node gave up its lease on a clean stop."""
    return not (event.type == "LEADER_LOST" and event.payload.get("released"))


class Alerts:
    """Logs operational events and hands them to the configured alert command."""

    def __init__(self, settings: AlertSettings) -> None:
        self.settings = settings
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
