"""`zeroloop pipeline`: which config keys the loop runs, their state, pausing by hand, decisions."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from zeroloop.cli.common import console, open_app
from zeroloop.cli.helptext import examples
from zeroloop.cli.tables import Column, fitted

if TYPE_CHECKING:
    from zeroloop.app import App

app = typer.Typer(
    help="Start, inspect, pause and resume the loop per config key.",
    no_args_is_help=True,
    epilog=examples("zeroloop pipeline ls", "zeroloop pipeline start connect_four_2p", "zeroloop pipeline decisions"),
)


@app.command("start", epilog=examples("zeroloop pipeline start connect_four_2p"))
def start(
    config_key: str = typer.Argument(..., help="A config key such as connect_four_2p or tic_tac_toe_2p."),
) -> None:
    """Add a config key to the loop (the coordinator schedules its selfplay from now on)."""
    from zeroloop.bootstrap import start_pipeline

    with open_app() as zl:
        start_pipeline(zl, config_key)
    console.print(f"{config_key}: pipeline started")


def training_summary(training: dict[str, Any]) -> str:
    """The last training run: the step reached (the final one once done) of the run's steps, and its loss."""
    loss = training.get("loss")
    step = training.get("step", 0)
    total = training.get("total_steps")
    if training.get("finished"):
        head = f"last run done after {step} steps"
    else:
        head = f"step {step}" + (f" of {total}" if total else "")
    return head + (f", loss {loss:.3f}" if loss is not None else "")


def pipelines_table(zl: App) -> Table:
    """Per config key: stage, round, samples, the production model and its rating, training, cost, pause state.

    Cost is each job's time on its node at the node's price (split among the node's slots).
    """
    from zeroloop.control import views
    from zeroloop.pipeline.ratings import RELATIVE_TO

    columns = (
        Column("config", key=True),
        Column("stage"),
        Column("round", drop=4),
        Column("samples", drop=3),
        Column("since training", drop=1),
        Column("model", key=True),
        Column(f"Elo ({RELATIVE_TO})"),
        Column("training", drop=2),
        Column("cost", drop=5),
        Column("paused"),
    )
    rows = []
    for row in views.pipelines(zl):
        training = row["training"]
        rows.append(
            [
                escape(row["config_key"]),
                row["stage"],
                str(row["iteration"]),
                str(row["samples_total"]),
                str(row["samples_since_training"]),
                escape(row["model_id"] or "-"),
                row["rating"]["text"] if row["rating"] else "-",
                training_summary(training) if training.get("loss") is not None else "-",
                f"{row['cost']:.2f}",
                escape(row["pause_reason"] or "") if row["paused"] else "no",
            ]
        )
    return fitted(columns, rows, width=console.width, title="pipelines")


@app.command("ls", epilog=examples("zeroloop pipeline ls"))
def list_pipelines() -> None:
    """Each config key's stage, round, samples, production model and its Elo, and pause state."""
    with open_app() as zl:
        console.print(pipelines_table(zl))


def _set_paused(config_key: str, paused: bool) -> None:
    from zeroloop.control import actions

    with open_app() as zl:
        console.print(actions.set_paused(zl, config_key, paused))


@app.command("pause", epilog=examples("zeroloop pipeline pause connect_four_2p"))
def pause(config_key: str = typer.Argument(..., help="The config key to pause.")) -> None:
    """Stop scheduling new work for a config key (jobs already running finish)."""
    _set_paused(config_key, True)


@app.command("resume", epilog=examples("zeroloop pipeline resume connect_four_2p"))
def resume(config_key: str = typer.Argument(..., help="The config key to resume.")) -> None:
    """Resume a paused config key."""
    _set_paused(config_key, False)


def _local_time(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def _reason(evidence: dict[str, Any]) -> str:
    """What the decision rested on, in words: the policy's reason, or the error that ended a round."""
    if evidence.get("reason"):
        return str(evidence["reason"])
    if evidence.get("error"):
        return f"{evidence.get('job_type', 'job')} job {evidence.get('job_id', '?')} died: {evidence['error']}"
    return "-"


def _subject(evidence: dict[str, Any]) -> str:
    if evidence.get("model_id"):
        return str(evidence["model_id"])
    if evidence.get("iteration") is not None:
        return f"round {evidence['iteration']}"
    return "-"


@app.command(
    "decisions",
    epilog=examples(
        "zeroloop pipeline decisions",
        "zeroloop pipeline decisions tic_tac_toe_2p --limit 5",
        "zeroloop pipeline decisions --json | jq '.[0].evidence'",
    ),
)
def decisions(
    config_key: str | None = typer.Argument(None, help="Only this config key (default: every config key)."),
    limit: int = typer.Option(20, "--limit", "-n", min=1, help="Show at most this many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print the decisions with their full evidence as JSON."),
) -> None:
    """The promotion and round decisions, newest first: why, what was decided, and when (local time)."""
    from zeroloop.control import views

    with open_app() as zl:
        rows = views.decisions(zl, config_key, limit)
    if as_json:
        typer.echo(json.dumps(rows, indent=2, sort_keys=True))
        return
    if not rows:
        console.print("no decisions yet")
        return
    table = Table("reason", "decision", "config", "model / round", "time", header_style="bold")
    for row in rows:
        evidence = row["evidence"] or {}
        table.add_row(
            escape(_reason(evidence)),
            f"{row['kind']}: {row['outcome']}",
            row["config_key"],
            escape(_subject(evidence)),
            _local_time(row["created_at"]),
        )
    console.print(table)
