"""`zeroloop status`, `nodes`, `daemons`, `health`: what the cluster looks like, read from the store."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import typer
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from zeroloop.cli.common import console, err_console, finite, open_app
from zeroloop.cli.helptext import examples
from zeroloop.cli.tables import Column, fitted
from zeroloop.errors import ZeroloopError
from zeroloop.profiles import WORKER_PROFILES

if TYPE_CHECKING:
    from zeroloop.app import App

nodes_app = typer.Typer(
    help="List, launch, drain and terminate the nodes of the cluster.",
    no_args_is_help=True,
    epilog=examples("zeroloop nodes ls", "zeroloop nodes launch --provider local --count 2"),
)
daemons_app = typer.Typer(
    help="Show the supervised daemons.", no_args_is_help=True, epilog=examples("zeroloop daemons ls")
)
HEALTHY_LEVELS = ("starting", "healthy", "degraded")


def _ago(moment: float | None, now: float) -> str:
    return "-" if moment is None else f"{max(0.0, now - moment):.0f}s ago"


def nodes_table(app: App, *, ended: bool = False) -> Table:
    """The nodes with status, resources and last heartbeat (`views.nodes`, as the dashboard shows them);
    those that ended (terminated, failed) only with `ended`."""
    from zeroloop.control import views

    now = app.clock()
    columns = (
        Column("node", key=True),
        Column("status"),
        Column("provider", drop=3),
        Column("pool", drop=6),
        Column("slots", drop=5),
        Column("cpus", drop=2),
        Column("memory GiB", drop=1),
        Column("gpus", drop=4),
        Column("load", drop=8),
        Column("heartbeat"),
        Column("cost/h", drop=7),
        Column("cost", drop=9),
        Column("models held", drop=10),
    )
    rows = []
    everything = views.nodes(app, ended=True)
    for row in everything:
        if row["status"] in views.ENDED_NODES and not ended:
            continue
        load = row["utilisation"]
        gpu = load.get("gpu_pct")
        shown = f"cpu {load.get('cpu_pct', 0):.0f}%" + (f" gpu {gpu:.0f}%" if gpu is not None else "")
        rows.append(
            [
                escape(row["id"]),
                row["status"],
                escape(row["provider"]),
                escape(row["pool"] or "-"),
                str(row["slots"]),
                str(row["cpu_count"]),
                f"{row['memory_bytes'] / 2**30:.1f}",
                str(row["gpus"]),
                shown,
                _ago(row["heartbeat_at"], now),
                "-" if row["cost_per_hour"] is None else f"{row['cost_per_hour']:g}",
                f"{row['cost']:.2f}",
                escape(", ".join(f"{key}: {model}" for key, model in row["holds"].items()) or "-"),
            ]
        )
    table = fitted(columns, rows, width=console.width, title="nodes")
    if not ended:
        _say_hidden(table, len(everything) - len(rows), "ended node(s)")
    return table


def _say_hidden(table: Table, hidden: int, what: str) -> None:
    """Add to `table`'s caption how many rows of what ended it leaves out."""
    if hidden > 0:
        note = f"{hidden} {what} not shown (--all shows them)"
        table.caption = f"{table.caption}; {note}" if table.caption else note
        table.caption_style = "dim"


def fleet_table(app: App) -> Table:
    """Each provider pool: nodes by state, cost so far, and the autoscaler's latest decision (`views.pools`)."""
    from zeroloop.control import views

    table = Table(title="fleet", header_style="bold")
    for column in ("pool", "kind", "profile", "nodes", "min..max", "cost so far", "last decision"):
        table.add_column(column)
    for pool in views.pools(app):
        last = pool["last_decision"]
        table.add_row(
            escape(pool["pool"]),
            pool["kind"],
            pool["profile"],
            ", ".join(f"{status} {count}" for status, count in sorted(pool["nodes"].items())) or "none",
            f"{pool['min_nodes']}..{pool['max_nodes']}",
            f"{pool['cost']:.2f}",
            escape(f"{last['outcome']}: {last['reason']}" if last else "-"),
        )
    return table


def daemons_table(app: App, *, ended: bool = False) -> Table:
    """The daemons of the nodes with state, restarts, last error and reason (`views.daemons`); those of
    nodes that ended only with `ended`."""
    from zeroloop.control import views

    now = app.clock()
    table = Table(title="daemons", header_style="bold")
    for column in ("node", "daemon", "state", "health", "restarts", "last error / reason", "updated"):
        table.add_column(column)
    colour = {"running": "green", "standby": "cyan", "backoff": "yellow", "held": "yellow", "failed": "red"}
    everything = views.daemons(app, ended=True)
    for row in everything:
        if row["node_ended"] and not ended:
            continue
        style = colour.get(row["state"], "white")
        table.add_row(
            escape(row["node"]),
            row["name"],
            f"[{style}]{row['state']}[/{style}]",
            str(row["health"] or "-"),
            str(row["restarts"]),
            escape(str(row["last_error"] or ""))[:80],
            _ago(row["updated_at"], now),
        )
    if not ended:
        _say_hidden(table, len(everything) - table.row_count, "daemon(s) of ended nodes")
    return table


def summary_table(app: App) -> Table:
    """The leader, queue depths and the health score in one table (`views.health` and `views.work`)."""
    from zeroloop.control import views

    table = Table(title="cluster", header_style="bold", show_header=False)
    table.add_column("what")
    table.add_column("value")
    health = views.health(app)
    leader = health["leader"]
    if leader is None:
        table.add_row("leader", "[yellow]none[/yellow]")
    else:
        until = datetime.fromtimestamp(leader["expires_at"], UTC).strftime("%H:%M:%S")
        table.add_row(
            "leader", f"{escape(leader['node'])} (token {leader['token']}, {leader['state']}, until {until} UTC)"
        )
    work = views.work(app)
    by_status = work["by_status"]
    table.add_row("jobs", ", ".join(f"{status} {count}" for status, count in sorted(by_status.items())) or "none")
    for job_type, line in work["by_type"].items():
        shown = f"queued {line['queued']}, running {line['running']}"
        if line["work_s"] is not None:
            shown += f", about {line['work_s']:.0f} s of work for {work['slots']} slot(s)"
        table.add_row(f"  {job_type}", shown)
    colour = "green" if health["level"] in HEALTHY_LEVELS else "red"
    table.add_row("health", f"[{colour}]{health['level']}[/{colour}] ({health['score']:.2f})")
    for issue in health["issues"]:
        table.add_row("", escape(issue))
    return table


def status_command(
    watch: bool = typer.Option(False, "--watch", "-w", help="Refresh every --interval seconds until Ctrl-C."),
    interval: float = typer.Option(
        2.0, "--interval", min=0.1, max=3600, callback=finite, help="Refresh interval with --watch (seconds)."
    ),
) -> None:
    """Show the leader, queue depths, health, each pipeline (stage, round, samples, model, Elo), nodes and daemons."""
    from zeroloop.cli.pipeline import pipelines_table

    with open_app() as app:

        def render() -> Group:
            parts = [summary_table(app), pipelines_table(app), nodes_table(app), daemons_table(app)]
            if app.fleet.providers:
                parts.insert(2, fleet_table(app))
            return Group(*parts)

        if not watch:
            console.print(render())
            return
        try:
            with Live(render(), console=console, refresh_per_second=4) as live:
                while True:
                    time.sleep(interval)
                    live.update(render())
        except KeyboardInterrupt:
            return


ENDED_HELP = "Also list what ended (terminated or failed nodes, and their daemons)."


@nodes_app.command("ls", epilog=examples("zeroloop nodes ls", "zeroloop nodes ls --all"))
def nodes_ls(ended: bool = typer.Option(False, "--all", "-a", help=ENDED_HELP)) -> None:
    """List the nodes (those that ended only with --all)."""
    with open_app() as app:
        console.print(nodes_table(app, ended=ended))


@nodes_app.command("drain", epilog=examples("zeroloop nodes drain gpu-1a2b3c4d"))
def nodes_drain(node_id: str = typer.Argument(..., help="The node to drain.")) -> None:
    """Stop giving a node new work at once (its running jobs finish); idle shutdown may then terminate it."""
    from zeroloop.cluster.nodes import NodeStatus

    with open_app() as app:
        app.nodes.set_status(node_id, NodeStatus.DRAINING)
    console.print(f"node {escape(node_id)} is draining: it claims no new job")


@nodes_app.command(
    "launch", epilog=examples("zeroloop nodes launch --provider local", "zeroloop nodes launch -p gpu -n 4")
)
def nodes_launch(
    provider: str = typer.Option(..., "--provider", "-p", help="The provider pool to launch in ([providers.NAME])."),
    profile: str | None = typer.Option(None, "--profile", help="Worker profile; default: the pool's."),
    count: int = typer.Option(1, "--count", "-n", min=1, max=1000, help="How many machines."),
) -> None:
    """Launch machines in a provider pool now, within its max_nodes and the budget."""
    if profile is not None and profile not in WORKER_PROFILES:
        raise typer.BadParameter(f"choose one of {', '.join(WORKER_PROFILES)}", param_hint="--profile")
    with open_app() as app:
        pool = app.fleet.provider(provider)
        pool.check()
        outcomes = app.fleet.launch(provider, count, profile=profile)
    failed = [outcome for outcome in outcomes if outcome.error]
    for outcome in outcomes:
        if outcome.error:
            err_console.print(f"[red]{escape(outcome.node_id)}: launch failed:[/red] {escape(outcome.error)}")
        else:
            console.print(f"{escape(outcome.node_id)}: launching")
    if failed:
        raise typer.Exit(1)


@nodes_app.command(
    "terminate", epilog=examples("zeroloop nodes terminate gpu-1a2b3c4d", "zeroloop nodes terminate gpu-1 --force")
)
def nodes_terminate(
    node_id: str = typer.Argument(..., help="The node to stop."),
    force: bool = typer.Option(False, "--force", help="Give up the only copies held by a lost or failed node."),
) -> None:
    """Stop a node's machine; refused (and the node drained) while it holds the only copy of an artifact."""
    with open_app() as app:
        status = app.fleet.terminate(node_id, reason="zeroloop nodes terminate", force=force)
    console.print(f"node {escape(node_id)} is {status.value}")


@nodes_app.command(
    "quarantine", epilog=examples('zeroloop nodes quarantine gpu-1a2b3c4d --reason "forged game batches"')
)
def nodes_quarantine(
    node_id: str = typer.Argument(..., help="The node whose results to keep out."),
    reason: str = typer.Option(..., "--reason", "-r", min=1, max=400, help="Why (recorded with the decision)."),
) -> None:
    """Keep a node's results out of every training window from now on (the node itself keeps running)."""
    from zeroloop.control import actions

    with open_app() as app:
        console.print(escape(actions.quarantine(app, node_id, reason=reason, actor="cli")))


@nodes_app.command("unquarantine", epilog=examples("zeroloop nodes unquarantine gpu-1a2b3c4d"))
def nodes_unquarantine(node_id: str = typer.Argument(..., help="The node whose results count again.")) -> None:
    """Let a quarantined node's results into training windows again."""
    from zeroloop.control import actions

    with open_app() as app:
        console.print(escape(actions.lift_quarantine(app, node_id, actor="cli")))


@nodes_app.command("undrain", epilog=examples("zeroloop nodes undrain gpu-1a2b3c4d"))
def nodes_undrain(node_id: str = typer.Argument(..., help="The node to make active again.")) -> None:
    """Let a draining node take new work again."""
    from zeroloop.cluster.nodes import NodeStatus

    with open_app() as app:
        app.nodes.set_status(node_id, NodeStatus.ACTIVE)
    console.print(f"node {escape(node_id)} is active")


@daemons_app.command("ls", epilog=examples("zeroloop daemons ls", "zeroloop daemons ls --all"))
def daemons_ls(ended: bool = typer.Option(False, "--all", "-a", help=ENDED_HELP)) -> None:
    """List the daemons of the nodes, with state, restarts and last error (of ended nodes only with --all)."""
    with open_app() as app:
        console.print(daemons_table(app, ended=ended))


def health_command(
    check: bool = typer.Option(
        False, "--check", help="Print one line; exit 0 if starting, healthy or degraded, else 1."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the full assessment as JSON."),
) -> None:
    """Show the system health score, its components and issues (`--check` for probes)."""
    with open_app() as app:
        report = app.health.assess()
    ok = report.level.value in HEALTHY_LEVELS
    if as_json:
        console.print_json(json.dumps(report.as_dict()))
    elif check:
        console.print(f"{report.level.value} {report.score:.2f}" + ("" if ok else f": {'; '.join(report.issues)}"))
    else:
        table = Table(title=f"health: {report.level.value} ({report.score:.2f})", header_style="bold")
        table.add_column("component")
        table.add_column("value")
        for name, value in report.components.items():
            table.add_row(name, f"{value:.2f}")
        console.print(table)
        for issue in report.issues:
            err_console.print(f"[yellow]issue:[/yellow] {escape(issue)}")
    if check and not ok:
        raise typer.Exit(1)


providers_app = typer.Typer(
    help="The provider pools that launch machines.", no_args_is_help=True, epilog=examples("zeroloop providers ls")
)


@providers_app.command("ls", epilog=examples("zeroloop providers ls", "zeroloop providers ls --check"))
def providers_ls(
    check: bool = typer.Option(False, "--check", help="Also check each pool works here (binaries, partitions)."),
) -> None:
    """List the provider pools with their settings and what they offer."""
    table = Table(title="provider pools", header_style="bold")
    for column in ("pool", "kind", "profile", "min..max", "slots", "price/h", "offers", "check"):
        table.add_column(column)
    failed = 0
    with open_app() as app:
        for name, provider in app.fleet.providers.items():
            pool = provider.pool
            verdict = "-"
            if check:
                try:
                    provider.check()
                    verdict = "[green]ok[/green]"
                except ZeroloopError as exc:
                    verdict = f"[red]{escape(str(exc))}[/red]"
                    failed += 1
            try:
                offers = ", ".join(offer.name for offer in provider.offers())
            except ZeroloopError as exc:
                offers = f"? ({exc})"
            table.add_row(
                escape(name),
                provider.kind,
                pool.profile,
                f"{pool.min_nodes}..{pool.max_nodes}",
                str(pool.slots),
                "-" if pool.price_per_hour is None else f"{pool.price_per_hour:g}",
                escape(offers),
                verdict,
            )
        if not app.fleet.providers:
            console.print("no provider pools: add [providers.NAME] sections to zeroloop.toml (docs/cluster.md)")
            return
    console.print(table)
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add `status`, `health`, `nodes`, `providers` and `daemons` to the top-level command."""
    app.command("status", epilog=examples("zeroloop status", "zeroloop status --watch --interval 5"))(status_command)
    app.command("health", epilog=examples("zeroloop health", "zeroloop health --check"))(health_command)
    app.add_typer(nodes_app, name="nodes")
    app.add_typer(daemons_app, name="daemons")
    app.add_typer(providers_app, name="providers")
