"""What every command shares: the consoles, loading settings (with logging and tracing set up), opening the App.

The CLI imports only what a command needs when it runs: importing this module, or any
command module, loads typer, rich and the settings, never the App, the store or the
server (bench/cli.py measures it; tests/cli/test_imports.py guards it). A command module
imports the domain inside its command functions.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from zeroloop.errors import ConfigError

if TYPE_CHECKING:
    from zeroloop.app import App
    from zeroloop.config import Settings
    from zeroloop.ports import WorkerParts

console = Console()
err_console = Console(stderr=True)


def settings() -> Settings:
    """Load and validate the settings (and a command workload's file); errors reach `main` as one line."""
    from zeroloop.config import load_settings

    loaded = load_settings()
    if loaded.workload.kind == "command" and loaded.workload.command_file is not None:
        from zeroloop.workload.command import load_command_specs

        # Checked by every command, `zeroloop config` included, not first by a worker running a job.
        load_command_specs(loaded.workload.command_file, loaded.workload.command_timeout_s)
    from zeroloop import logs, tracing

    if loaded.providers:
        from zeroloop.fleet.pools import check_pools

        check_pools(loaded)  # every pool's kind loads and its options parse, for `config` and `doctor` too
    logs.configure(loaded, err_console)
    tracing.setup(loaded)
    return loaded


def require_device(loaded: Settings) -> None:
    """Refuse to start workers that cannot run their workload here: no torch and OpenSpiel, no such device,
    or a workload class of one's own that does not load."""
    from zeroloop.cli.doctor import device_problem
    from zeroloop.workload.factory import check_workload

    check_workload(loaded.workload)
    if loaded.workload.kind == "alphazero":
        problem = device_problem(loaded.workload.device)
        if problem is not None:
            raise ConfigError(f"{problem}: set ZEROLOOP_WORKLOAD__DEVICE=cpu or to a device torch sees")


@contextmanager
def open_app(*, upgrade: bool | None = None) -> Iterator[App]:
    """Open the App for one command and close it afterwards."""
    from zeroloop.app import App

    with App(settings(), upgrade=upgrade) as app:
        yield app


def finite(value: float) -> float:
    """A typer callback for float options: refuse NaN and infinity, which range checks let through."""
    if not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


@contextmanager
def open_worker() -> Iterator[WorkerParts]:
    """Open a worker's parts: over `zeroloop serve` when server.url is set, else the App over the store."""
    loaded = settings()
    if loaded.server.url is None:
        from zeroloop.app import App

        with App(loaded) as app:
            yield app
        return
    from zeroloop.remote.app import RemoteApp

    with RemoteApp(loaded) as remote:
        yield remote
