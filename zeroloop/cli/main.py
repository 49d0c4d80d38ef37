"""The `zeroloop` command: every subcommand is registered here."""

from __future__ import annotations

import json
import sys

import typer
from rich.markup import escape
from rich.table import Table

from zeroloop.cli import backup as backup_cli
from zeroloop.cli import cluster as cluster_cli
from zeroloop.cli import db, helptext
from zeroloop.cli import dlq as dlq_cli
from zeroloop.cli import events as events_cli
from zeroloop.cli import gc as gc_cli
from zeroloop.cli import models as models_cli
from zeroloop.cli import pipeline as pipeline_cli
from zeroloop.cli import queue as queue_cli
from zeroloop.cli import quickstart as quickstart_cli
from zeroloop.cli import run as run_cli
from zeroloop.cli import serve as serve_cli
from zeroloop.cli import tokens as tokens_cli
from zeroloop.cli import tune as tune_cli
from zeroloop.cli.common import console, err_console, settings
from zeroloop.cli.config_toml import to_toml
from zeroloop.errors import ZeroloopError

app = typer.Typer(
    name="zeroloop",
    help="Run the AlphaZero-style self-improvement loop across a fleet of unreliable machines.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    epilog=helptext.examples(
        "zeroloop quickstart --game tic_tac_toe --minutes 10",
        "zeroloop status",
        "zeroloop models ls --help",
    ),
)
app.add_typer(db.app, name="db")
quickstart_cli.register(app)
run_cli.register(app)
serve_cli.register(app)
cluster_cli.register(app)
app.add_typer(models_cli.app, name="models")
app.add_typer(pipeline_cli.app, name="pipeline")
app.add_typer(events_cli.app, name="events")
app.add_typer(dlq_cli.app, name="dlq")
app.add_typer(queue_cli.app, name="queue")
app.add_typer(tokens_cli.app, name="tokens")
app.add_typer(backup_cli.app, name="backup")
app.add_typer(tune_cli.app, name="tune")
gc_cli.register(app)


@app.command(
    "config",
    epilog=helptext.examples("zeroloop config > zeroloop.toml", "zeroloop config --json"),
)
def config_command(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of TOML."),
) -> None:
    """Print the effective settings as TOML that pastes into zeroloop.toml, with passwords and tokens redacted."""
    data = settings().redacted()
    # Plain text on purpose: rich markup would swallow `[store]` and other section headers.
    typer.echo(json.dumps(data, indent=2) if as_json else to_toml(data).rstrip("\n"))


@app.command("doctor", epilog=helptext.examples("zeroloop doctor"))
def doctor_command() -> None:
    """Check the store, the data directory, the artifact location and the optional dependencies."""
    from zeroloop.cli import doctor

    findings = doctor.run_checks(settings())
    table = Table(show_header=True, header_style="bold")
    for column in ("check", "result", "detail", "fix"):
        table.add_column(column)
    style = {doctor.Verdict.OK: "green", doctor.Verdict.WARN: "yellow", doctor.Verdict.FAIL: "red"}
    for finding in findings:
        colour = style[finding.verdict]
        table.add_row(
            finding.name, f"[{colour}]{finding.verdict}[/{colour}]", escape(finding.detail), escape(finding.fix)
        )
    console.print(table)
    failed = [finding for finding in findings if finding.verdict is doctor.Verdict.FAIL]
    if failed:
        err_console.print(f"[red]doctor: {len(failed)} check(s) failed[/red]")
        raise typer.Exit(1)
    console.print("[green]doctor: all checks passed[/green]")


helptext.apply(app)


def main() -> None:
    """Entry point: run the CLI, printing zeroloop's own errors as one line and exiting 2."""
    try:
        app()
    except ZeroloopError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        sys.exit(2)
