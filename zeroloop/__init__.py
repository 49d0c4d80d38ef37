"""zeroloop: the AlphaZero-style self-improvement loop, run continuously across unreliable machines.

The names below are the package's public surface; everything else is reached through
its module. The seeds' conveniences (`initialize_all_coordinators`, `get_system_health`,
`shutdown_all_coordinators`, `publish`, `check_backpressure`) are thin functions over an
explicit `App`:

    from zeroloop import App, load_settings, initialize_all_coordinators, get_system_health

    with App(load_settings()) as app:
        status = await initialize_all_coordinators(app, profile="coordinator")
        health = get_system_health(app)
        print(f"Health: {health['status']} ({health['overall_health']:.0%})")
        await shutdown_all_coordinators(app)

or, as the seeds wrote it, with no App (zeroloop opens one from the settings and runs
the `full` profile on a thread of its own; see `zeroloop.bootstrap`):

    status = initialize_all_coordinators(auto_trigger_pipeline=True)
    print(f"Initialized: {status['_instances']}")
    health = get_system_health()
    await shutdown_all_coordinators()
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zeroloop.app import App
    from zeroloop.bootstrap import (
        check_backpressure,
        get_system_health,
        initialize_all_coordinators,
        publish,
        shutdown_all_coordinators,
    )
    from zeroloop.config import Settings, load_settings
    from zeroloop.errors import ZeroloopError
    from zeroloop.queue.backpressure import BackpressureLevel
    from zeroloop.tracing import get_trace_id, span, traced

# Where each public name lives. They are imported on first use (PEP 562), so that importing
# any zeroloop module (the CLI above all) does not first load the whole App.
_HOMES = {
    "App": "zeroloop.app",
    "BackpressureLevel": "zeroloop.queue.backpressure",
    "Settings": "zeroloop.config",
    "ZeroloopError": "zeroloop.errors",
    "check_backpressure": "zeroloop.bootstrap",
    "get_system_health": "zeroloop.bootstrap",
    "get_trace_id": "zeroloop.tracing",
    "initialize_all_coordinators": "zeroloop.bootstrap",
    "load_settings": "zeroloop.config",
    "publish": "zeroloop.bootstrap",
    "shutdown_all_coordinators": "zeroloop.bootstrap",
    "span": "zeroloop.tracing",
    "traced": "zeroloop.tracing",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'zeroloop' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = [
    "App",
    "BackpressureLevel",
    "Settings",
    "ZeroloopError",
    "__version__",
    "check_backpressure",
    "get_system_health",
    "get_trace_id",
    "initialize_all_coordinators",
    "load_settings",
    "publish",
    "shutdown_all_coordinators",
    "span",
    "traced",
]
