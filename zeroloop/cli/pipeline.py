"""`zeroloop pipeline`: which config keys the loop runs, their state, pausing by hand, decisions."""

from __future__ import annotations

import datetime as dt
import json
import time

import typer
from rich.markup import escape
from rich.table import Table

from zeroloop.app import App
from zeroloop.cli.common import console, open_app
from zeroloop.errors import ZeroloopError
from zeroloop.store.queries import models as model_queries
from zeroloop.store.queries import pipelines as queries
from zeroloop.store.values import check_text

app = typer.Typer(help="Start, inspect, pause and resume the loop per config key.", no_args_is_help=True)

MANUAL_PAUSE = "paused by hand"


def start_pipeline(zl: App, config_key: str) -> None:
    """Check that the workload supports `config_key`, then make sure its pipeline exists."""
    check_text(config_key, "the config key", ZeroloopError)
    if not 0 < len(config_key) <= 200:
        raise ZeroloopError(f"config key {config_key!r} must be 1-200 characters, e.g. connect_four_2p")
    if zl.settings.workload.kind == "alphazero":
        from zeroloop.workload.games import Game

        Game(config_key, zl.settings.workload.game_params.get(config_key))
    with zl.store.transaction() as conn:
        queries.ensure_pipeline(conn, config_key, time.time())


@app.command("start")
def start(
    config_key: str = typer.Argument(..., help="A config key such as connect_four_2p or tic_tac_toe_2p."),
) -> None:
    """Add a config key to the loop (the coordinator schedules its selfplay from now on)."""
    with open_app() as zl:
        start_pipeline(zl, config_key)
    console.print(f"{config_key}: pipeline started")


def pipelines_table(zl: App) -> Table:
    """Per config key: stage, round, samples, the production model and its Elo, training, pause state."""
    with zl.store.read() as conn:
        rows = queries.list_pipelines(conn)
        elo = {row["config_key"]: model_queries.production_model(conn, row["config_key"]) for row in rows}
    table = Table(
        "config", "stage", "round", "samples", "since training", "model", "Elo", "training", "paused",
        title="pipelines", header_style="bold",
    )  # fmt: skip
    for row in rows:
        model = elo[row["config_key"]]
        training = (row["progress"] or {}).get("training") or {}
        loss = training.get("loss")
        table.add_row(
            row["config_key"],
            row["stage"],
            str(row["iteration"]),
            str(row["samples_total"]),
            str(row["samples_since_training"]),
            model["id"] if model else "-",
            f"{model['elo']:.0f}" if model else "-",
            f"step {training.get('step', 0)}, loss {loss:.3f}" if loss is not None else "-",
            escape(row["pause_reason"] or "") if row["paused"] else "no",
        )
    return table


@app.command("ls")
def list_pipelines() -> None:
    """Each config key's stage, round, samples, production model and its Elo, and pause state."""
    with open_app() as zl:
        console.print(pipelines_table(zl))


def _set_paused(config_key: str, paused: bool) -> None:
    with open_app() as zl, zl.store.transaction() as conn:
        state = queries.get_pipeline(conn, config_key, for_update=True)
        if state is None:
            raise ZeroloopError(f"no pipeline {config_key!r}: see `zeroloop pipeline ls`")
        if bool(state["paused"]) == paused:
            console.print(f"{config_key}: already {'paused' if paused else 'running'}")
            return
        reason = MANUAL_PAUSE if paused else "resumed by hand"
        queries.update_pipeline(
            conn, config_key, time.time(), paused=paused, pause_reason=MANUAL_PAUSE if paused else None
        )
        zl.bus.publish(
            "PIPELINE_PAUSED" if paused else "PIPELINE_RESUMED", {"config_key": config_key, "reason": reason}
        )
    console.print(f"{config_key}: {'paused' if paused else 'resumed'}")


@app.command("pause")
def pause(config_key: str = typer.Argument(..., help="The config key to pause.")) -> None:
    """Stop scheduling new work for a config key (jobs already running finish)."""
    _set_paused(config_key, True)


@app.command("resume")
def resume(config_key: str = typer.Argument(..., help="The config key to resume.")) -> None:
    """Resume a paused config key."""
    _set_paused(config_key, False)


@app.command("decisions")
def decisions(
    config_key: str = typer.Argument(..., help="The config key."),
    limit: int = typer.Option(20, min=1, help="Show at most this many, newest first."),
) -> None:
    """The promotion and round decisions of a config key, with the evidence each rests on."""
    with open_app() as zl, zl.store.read() as conn:
        rows = queries.list_decisions(conn, config_key, limit=limit)
    for row in rows:
        when = dt.datetime.fromtimestamp(row["created_at"]).strftime("%Y-%m-%d %H:%M:%S")
        console.print(f"[bold]{when}[/bold] {row['kind']}: {row['outcome']}")
        console.print(f"  {escape(json.dumps(row['evidence'], sort_keys=True))}")
    if not rows:
        console.print("no decisions yet")
