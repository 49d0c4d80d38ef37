"""`zeroloop run`, `zeroloop coordinator`, `zeroloop worker`: run a profile's daemons in this process.

Signals only set flags: the first SIGINT/SIGTERM starts a graceful drain (daemons stop
in reverse dependency order, each within `daemons.drain_deadline_s`); more SIGTERMs change
nothing (a provider and the fleet may both send one), and a second SIGINT cancels
everything at once. The exit status: 0 after a drain, 130 after a forced stop, 3 when the
dead-man switch stopped a fleet machine nobody could reach, 4 when the server refused the
worker's token or the fleet refused its registration (zeroloop.cluster.agent).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from zeroloop.cli.common import console, err_console, open_app, open_worker, require_device
from zeroloop.cli.helptext import examples
from zeroloop.errors import AuthError
from zeroloop.profiles import PROFILES, WORKER_PROFILES

if TYPE_CHECKING:
    from zeroloop.daemons.daemon import ExitRequest
    from zeroloop.daemons.table import DaemonTable
    from zeroloop.ports import AppParts, WorkerParts

EXIT_ABORTED = 130


def table_for_cli() -> DaemonTable[AppParts]:
    """The daemons the CLI runs: the same table the library starts (`zeroloop.app.daemon_table`)."""
    from zeroloop.app import daemon_table

    return daemon_table()


async def _first(*waits: Awaitable[Any]) -> None:
    """Return when the first of `waits` is done, cancelling the others."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def serve(app: WorkerParts, profile: str, table: DaemonTable[Any] | None = None) -> int:
    """Run `profile` until a signal or a daemon's exit request; return the process's exit status.

    One stop, one drain: SIGTERM (from a service manager, a provider, the fleet) and the
    node agent's own request when the fleet terminates the node all start the same single
    drain, and repeating them changes nothing. Only a second SIGINT (a person pressing
    Ctrl-C again) stops at once without draining (status 130). A daemon may ask for the
    end with a status of its own (the dead-man switch, a revoked token: zeroloop.cluster.agent),
    which is returned after the drain, or at once when it asked for no drain.
    """
    from zeroloop.bootstrap import initialize_all_coordinators, shutdown_all_coordinators
    from zeroloop.cluster.agent import EXIT_REFUSED
    from zeroloop.daemons.daemon import ExitRequest

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    force = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        if sig is signal.SIGINT and stop.is_set():
            force.set()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        status = await initialize_all_coordinators(app, profile=profile, table=table)
        for layer, info in status["layers"].items():
            colour = {"started": "green", "failed": "red", "skipped": "yellow"}[info["status"]]
            detail = info.get("reason") or ", ".join(info["daemons"])
            console.print(f"[{colour}]{layer}: {info['status']}[/{colour}] {escape(detail)}")
        console.print(f"profile {profile} running on node {app.settings.cluster.node_id}; Ctrl-C drains, twice aborts")
        ending = app.daemons.context.exit if app.daemons is not None else ExitRequest()
        await _first(stop.wait(), ending.requested.wait())
        if ending.code is not None:
            err_console.print(f"stopping: {escape(ending.reason)}")
        if ending.force:
            await _abort(app)
            return ending.code or EXIT_ABORTED
        console.print("draining daemons (Ctrl-C again to stop at once)")
        shutdown = asyncio.create_task(shutdown_all_coordinators(app))
        await _first(asyncio.shield(shutdown), force.wait(), _forced(ending))
        if not shutdown.done():
            shutdown.cancel()
            await asyncio.gather(shutdown, return_exceptions=True)
            await _abort(app)
            err_console.print("[red]stopped at once: daemons were cancelled without draining[/red]")
            return ending.code if ending.force and ending.code is not None else EXIT_ABORTED
        shutdown.result()
        return ending.code or 0
    except AuthError as exc:  # refused while starting or stopping: no retry helps, and no drain can report
        err_console.print(f"[red]stopping at once: the server refused this worker: {escape(str(exc))}[/red]")
        await _abort(app)
        return EXIT_REFUSED
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _forced(ending: ExitRequest) -> None:
    """Return once a daemon asks for an end without a drain (it may do so during the drain)."""
    while not ending.force:
        ending.requested.clear()
        if ending.force:
            return
        await ending.requested.wait()


async def _abort(app: WorkerParts) -> None:
    if app.daemons is not None:
        await app.daemons.abort()


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
