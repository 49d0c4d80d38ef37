"""Start, inspect and stop a process's daemons over an explicit App, in the seeds' shape.

`initialize_all_coordinators(app, profile=...)` starts the profile's daemons layer by
layer (foundational, core, application). A layer in which a critical daemon fails to
start skips every later layer: their daemons are HELD with the reason, and the returned
status says which layer failed and why. `get_system_health(app)` combines the health
score with the daemons' states; `shutdown_all_coordinators(app)` drains them in reverse
dependency order. The manager lives on the App (`app.daemons`); nothing is global.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from zeroloop.app import App, daemon_registry
from zeroloop.daemons.daemon import Clock, DaemonContext, DaemonState, HealthState
from zeroloop.daemons.manager import DaemonManager, Sleep
from zeroloop.daemons.registry import Layer, Registry
from zeroloop.queue.backpressure import BackpressureLevel

_STATE_SCORE = {
    DaemonState.RUNNING: 1.0,
    DaemonState.STANDBY: 1.0,  # waiting for leadership is the normal state of a follower
    DaemonState.PENDING: 0.5,
    DaemonState.BACKOFF: 0.3,
    DaemonState.STOPPING: 0.5,
    DaemonState.HELD: 0.0,
    DaemonState.STOPPED: 0.0,
    DaemonState.FAILED: 0.0,
}
_HEALTH_SCORE = {HealthState.HEALTHY.value: 1.0, HealthState.DEGRADED.value: 0.7, HealthState.UNHEALTHY.value: 0.3}


async def initialize_all_coordinators(
    app: App,
    *,
    profile: str = "full",
    registry: Registry | None = None,
    consumers: Sequence[Any] = (),
    clock: Clock = time.time,
    sleep: Sleep | None = None,
    supervise: bool = True,
) -> dict[str, Any]:
    """Start the daemons of `profile` layer by layer; return what started, what failed and what was skipped.

    `consumers` are the durable event consumer specs this process runs. With `supervise`
    the manager keeps supervising in a background task until `shutdown_all_coordinators`.
    """
    specs = (registry or daemon_registry()).for_profile(profile)
    context = DaemonContext(app, clock=clock, consumers=consumers)
    manager = DaemonManager(specs, context, clock=clock)
    if sleep is not None:
        manager.sleep = sleep
    app.daemons = manager
    layers: dict[str, dict[str, Any]] = {}
    skip_reason: str | None = None
    for layer in Layer:
        names = [spec.name for spec in specs if spec.layer == layer]
        if not names:
            continue
        key = layer.name.lower()
        if skip_reason is not None:
            manager.hold(names, skip_reason)
            layers[key] = {"status": "skipped", "reason": skip_reason, "daemons": names}
            continue
        failed = await manager.start_layer(layer)
        critical = [name for name in failed if manager.records[name].spec.critical]
        layers[key] = {"status": "failed" if critical else "started", "daemons": names, "failed": failed}
        if critical:
            errors = "; ".join(f"{name}: {manager.records[name].last_error}" for name in critical)
            skip_reason = f"skipped because the {key} layer failed ({errors})"
    if supervise:
        manager.spawn_supervisor()
    return {
        "profile": profile,
        "_instances": [name for name, record in manager.records.items() if record.state is DaemonState.RUNNING],
        "layers": layers,
        "skipped": [name for name, record in manager.records.items() if record.state is DaemonState.HELD],
        "failed": [name for name, record in manager.records.items() if record.state is DaemonState.FAILED],
    }


def daemon_score(row: dict[str, Any]) -> float:
    """A daemon's contribution in [0, 1]: its state, and when running its own health check."""
    state = DaemonState(row["state"])
    if state is DaemonState.RUNNING:
        return _HEALTH_SCORE.get(row["health"].get("state") or HealthState.HEALTHY.value, 1.0)
    return _STATE_SCORE[state]


def get_system_health(app: App) -> dict[str, Any]:
    """The system health score and level, this process's daemons and every issue, as plain data."""
    report = app.health.assess()
    daemons = app.daemons.snapshot() if app.daemons is not None else []
    problems = list(report.issues)
    for row in daemons:
        if DaemonState(row["state"]) in (DaemonState.FAILED, DaemonState.HELD, DaemonState.BACKOFF):
            problems.append(f"{row['name']}: {row['state']} ({row['health'].get('reason') or row['last_error']})")
    return {
        "overall_health": report.score,
        "status": report.level.value,
        "components": report.components,
        "coordinators": {row["name"]: daemon_score(row) for row in daemons},
        "daemons": {row["name"]: row for row in daemons},
        "issues": problems,
        "pipeline_paused": report.paused,
    }


async def shutdown_all_coordinators(app: App) -> None:
    """Drain this process's daemons in reverse dependency order (each within the drain deadline)."""
    if app.daemons is not None:
        await app.daemons.shutdown()


def manager_of(app: App) -> DaemonManager:
    """The App's daemon manager; a clear error when nothing was initialised."""
    if app.daemons is None:
        raise RuntimeError("initialize_all_coordinators(app) has not run in this process")
    return app.daemons


def publish(app: App, event_type: str, payload: dict[str, Any], **options: Any) -> int:
    """The seeds' `publish()`: validate and append one event to `app`'s durable log; return its id."""
    return app.bus.publish(event_type, payload, **options)


def check_backpressure(app: App, queue_type: str) -> BackpressureLevel:
    """The seeds' `check_backpressure()`: the backpressure level of one queue type now."""
    return app.queue.check_backpressure(queue_type)
