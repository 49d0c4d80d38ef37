"""`zeroloop run`, `zeroloop coordinator`, `zeroloop worker`: run a profile's daemons in this process.

Signals only set flags: the first SIGINT/SIGTERM starts a graceful drain (daemons stop
in reverse dependency order, each within `daemons.drain_deadline_s`), a second one
cancels everything at once.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from zeroloop.cli.common import console, err_console, open_app, open_worker, require_device
from zeroloop.cli.helptext import examples
from zeroloop.profiles import PROFILES, WORKER_PROFILES

if TYPE_CHECKING:
    from zeroloop.daemons.table import DaemonTable
    from zeroloop.ports import AppParts, WorkerParts

EXIT_ABORTED = 130


def table_for_cli() -> DaemonTable[AppParts]:
    """The daemons the CLI runs: the same table the library starts (`zeroloop.app.daemon_table`)."""
    from zeroloop.app import daemon_table

    return daemon_table()


async def serve(app: WorkerParts, profile: str, table: DaemonTable[Any] | None = None) -> int:
    """Run `profile` until a signal; return 0 after a graceful drain, 130 after a forced stop.

    `table` defaults to the whole table for the App and to the worker daemons for a worker's parts.
    """
    from zeroloop.bootstrap import initialize_all_coordinators, shutdown_all_coordinators

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    force = asyncio.Event()

    def on_signal() -> None:
        (force if stop.is_set() else stop).set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        status = await initialize_all_coordinators(app, profile=profile, table=table)
        for layer, info in status["layers"].items():
            colour = {"started": "green", "failed": "red", "skipped": "yellow"}[info["status"]]
            detail = info.get("reason") or ", ".join(info["daemons"])
            console.print(f"[{colour}]{layer}: {info['status']}[/{colour}] {escape(detail)}")
        console.print(f"profile {profile} running on node {app.settings.cluster.node_id}; Ctrl-C drains, twice aborts")
        await stop.wait()
        console.print("draining daemons (send the signal again to stop at once)")
        shutdown = asyncio.create_task(shutdown_all_coordinators(app))
        forced = asyncio.create_task(force.wait())
        done, _pending = await asyncio.wait({shutdown, forced}, return_when=asyncio.FIRST_COMPLETED)
        if shutdown not in done:
            shutdown.cancel()
            await asyncio.gather(shutdown, return_exceptions=True)
            if app.daemons is not None:
                await app.daemons.abort()
            err_console.print("[red]stopped at once: daemons were cancelled without draining[/red]")
            return EXIT_ABORTED
        forced.cancel()
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _run(
    profile: str,
    opener: Callable[[], AbstractContextManager[WorkerParts]] = open_app,
    table: DaemonTable[Any] | None = None,
) -> None:
    with opener() as app:
        if profile != "coordinator":
            require_device(app.settings)  # this process runs jobs: its device must exist here
        code = asyncio.run(serve(app, profile, table))
    if code:
        raise typer.Exit(code)


def run_command(
    profile: str = typer.Option("full", "--profile", "-p", help=f"Daemon profile to run: {', '.join(PROFILES)}."),
) -> None:
    """Run the whole loop on this machine: coordinator and worker daemons in one process."""
    _run(profile)


def coordinator_command() -> None:
    """Run the coordinator profile: leader election and the leader-only daemons."""
    _run("coordinator")


def worker_command(
    profile: str = typer.Option(
        "training_node", "--profile", "-p", help=f"Worker profile: {', '.join(WORKER_PROFILES)}."
    ),
) -> None:
    """Run a worker: register this node, heartbeat, and run the profile's worker daemons.

    With ZEROLOOP_SERVER__URL (and ZEROLOOP_SERVER__TOKEN) set, the worker talks to `zeroloop serve` only.
    """
    if profile not in WORKER_PROFILES:
        raise typer.BadParameter(f"choose one of {', '.join(WORKER_PROFILES)}", param_hint="--profile")
    from zeroloop.app import worker_table

    # Over the store or behind the server alike, a worker runs the worker daemons only.
    _run(profile, open_worker, worker_table())


def register(app: typer.Typer) -> None:
    """Add `run`, `coordinator` and `worker` to the top-level command."""
    app.command("run", epilog=examples("zeroloop run", "zeroloop run --profile coordinator"))(run_command)
    app.command("coordinator", epilog=examples("zeroloop coordinator"))(coordinator_command)
    app.command("worker", epilog=examples("zeroloop worker", "zeroloop worker --profile selfplay"))(worker_command)
