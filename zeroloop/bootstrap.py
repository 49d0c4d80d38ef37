"""Start, inspect and stop a process's daemons, in the seeds' shape.

`await initialize_all_coordinators(app, profile=...)` starts the profile's daemons layer
by layer (foundational, core, application). A layer in which a critical daemon fails to
start skips every later layer: their daemons are HELD with the reason, and the returned
status says which layer failed and why. `get_system_health(app)` combines the health
score with the daemons' states; `await shutdown_all_coordinators(app)` drains them in
reverse dependency order. The manager lives on the App (`app.daemons`).

The seeds' own form takes no App, and its first call is not awaited:

    status = initialize_all_coordinators(auto_trigger_pipeline=True)
    health = get_system_health()
    await shutdown_all_coordinators()

It opens one App from `load_settings()` and runs the `full` profile (the same daemon
table as `zeroloop run`) on an event loop of its own in a background thread, the
`Runtime`; it is the one implicit instance in zeroloop, made only by this form and gone
after `shutdown_all_coordinators()`. `auto_trigger_pipeline=True` also makes sure a
pipeline runs (`pipeline.default_config_key` when the store has none), so the loop runs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar, overload

from zeroloop.app import App, daemon_table, worker_table
from zeroloop.daemons.daemon import Clock, DaemonContext, DaemonState, HealthState
from zeroloop.daemons.manager import DaemonManager, Sleep
from zeroloop.daemons.table import DaemonTable, Layer
from zeroloop.errors import ZeroloopError
from zeroloop.ports import WorkerParts
from zeroloop.queue.backpressure import BackpressureLevel
from zeroloop.store.queries import pipelines as pipeline_queries
from zeroloop.store.values import check_text

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


async def start_daemons(
    app: WorkerParts,
    *,
    profile: str = "full",
    table: DaemonTable[Any] | None = None,
    consumers: Sequence[Any] = (),
    clock: Clock = time.time,
    sleep: Sleep | None = None,
    supervise: bool = True,
) -> dict[str, Any]:
    """Start the daemons of `profile` layer by layer; return what started, what failed and what was skipped.

    `app` is the App, or a worker's parts behind `zeroloop serve` (RemoteApp), which run
    the worker daemons only (`zeroloop.app.worker_table`). `consumers` are the durable
    event consumer specs this process runs. With `supervise` the manager keeps
    supervising in a background task until `shutdown_all_coordinators`.
    """
    if table is None:
        table = daemon_table() if isinstance(app, App) else worker_table()
    specs = table.for_profile(profile)
    context = DaemonContext(app, clock=clock, consumers=consumers)
    manager: DaemonManager[Any] = DaemonManager(specs, context, clock=clock)
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
    started = (DaemonState.RUNNING, DaemonState.STANDBY)  # a follower's leader-only daemons wait in STANDBY
    return {
        "profile": profile,
        "_instances": [name for name, record in manager.records.items() if record.state in started],
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


def get_system_health(app: App | None = None) -> dict[str, Any]:
    """The system health score and level, this process's daemons and every issue, as plain data.

    Without an App: the one `initialize_all_coordinators()` opened.
    """
    app = app if app is not None else _runtime().app
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


async def shutdown_all_coordinators(app: WorkerParts | None = None) -> None:
    """Drain this process's daemons in reverse dependency order (each within the drain deadline).

    Without an App: drain the daemons `initialize_all_coordinators()` started and close its App.
    """
    if app is None:
        runtime = _DEFAULT.pop("runtime", None) or _runtime()
        try:
            await runtime.acall(shutdown_all_coordinators(runtime.app))
        finally:
            runtime.close()
        return
    if app.daemons is not None:
        await app.daemons.shutdown()


def start_pipeline(app: App, config_key: str) -> None:
    """Check that the workload supports `config_key`, then make sure its pipeline exists."""
    check_text(config_key, "the config key", ZeroloopError)
    if not 0 < len(config_key) <= 200:
        raise ZeroloopError(f"config key {config_key!r} must be 1-200 characters, e.g. connect_four_2p")
    if app.settings.workload.kind == "alphazero":
        from zeroloop.workload.games import Game

        Game(config_key, app.settings.workload.game_params.get(config_key))
    with app.store.transaction() as conn:
        pipeline_queries.ensure_pipeline(conn, config_key, time.time())


T = TypeVar("T")


class Runtime:
    """An App and its daemons on an event loop of their own, in a background thread (the seeds' no-App form)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="zeroloop-runtime", daemon=True)
        self.thread.start()

    def call(self, work: Coroutine[Any, Any, T]) -> T:
        """Run `work` on the runtime's loop and wait for its result (from any thread)."""
        return asyncio.run_coroutine_threadsafe(work, self.loop).result()

    async def acall(self, work: Coroutine[Any, Any, T]) -> T:
        """Run `work` on the runtime's loop and await its result from another loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, self.loop))

    def close(self) -> None:
        """Stop the loop, join the thread, close the App."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()
        self.app.close()


# The runtime of the seeds' no-App form, while it runs (at most one per process).
_DEFAULT: dict[str, Runtime] = {}


def _runtime() -> Runtime:
    if "runtime" not in _DEFAULT:
        raise ZeroloopError("nothing is running: call initialize_all_coordinators() first, or pass your App")
    return _DEFAULT["runtime"]


@overload
def initialize_all_coordinators(
    app: None = None, *, auto_trigger_pipeline: bool = False, profile: str = "full"
) -> dict[str, Any]: ...


@overload
def initialize_all_coordinators(
    app: WorkerParts,
    *,
    profile: str = "full",
    table: DaemonTable[Any] | None = None,
    consumers: Sequence[Any] = (),
    clock: Clock = time.time,
    sleep: Sleep | None = None,
    supervise: bool = True,
) -> Coroutine[Any, Any, dict[str, Any]]: ...


def initialize_all_coordinators(
    app: WorkerParts | None = None, *, auto_trigger_pipeline: bool = False, profile: str = "full", **options: Any
) -> Any:
    """Start the daemons of `profile`; see the module docstring for the two forms.

    With an App it returns a coroutine (await it) that starts the daemons on the caller's
    loop; `options` are `start_daemons`'s. Without one it opens the App from the settings,
    starts the daemons on the runtime thread and returns the status when they have started.
    """
    if app is not None:
        return start_daemons(app, profile=profile, **options)
    if "runtime" in _DEFAULT:
        raise ZeroloopError("initialize_all_coordinators() already runs; call shutdown_all_coordinators() first")
    from zeroloop.config import load_settings

    runtime = Runtime(App(load_settings(), source="library"))
    try:
        if auto_trigger_pipeline:
            with runtime.app.store.read() as conn:
                running = pipeline_queries.list_pipelines(conn)
            if not running:
                start_pipeline(runtime.app, runtime.app.settings.pipeline.default_config_key)
        status = runtime.call(start_daemons(runtime.app, profile=profile))
    except BaseException:
        runtime.close()
        raise
    _DEFAULT["runtime"] = runtime
    return status


def manager_of(app: WorkerParts) -> DaemonManager[Any]:
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
