"""`zeroloop models`: the model registry: list, inspect, promote by hand, roll back."""

from __future__ import annotations

import datetime as dt
import json

import typer
from rich.markup import escape
from rich.table import Table

from zeroloop.cli.common import console, open_app
from zeroloop.cli.helptext import examples
from zeroloop.cli.tables import Column, fitted

app = typer.Typer(
    help="List, inspect, promote and roll back models.",
    no_args_is_help=True,
    epilog=examples("zeroloop models ls", "zeroloop models show tic_tac_toe_2p-0003"),
)


def _when(epoch: float | None) -> str:
    return dt.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S") if epoch else "-"


@app.command("ls", epilog=examples("zeroloop models ls", "zeroloop models ls tic_tac_toe_2p --limit 5"))
def list_models(
    config_key: str | None = typer.Argument(None, help="Only models of this config key, e.g. connect_four_2p."),
    limit: int = typer.Option(50, min=1, help="Show at most this many models, newest first."),
) -> None:
    """List models, newest first, with stage, rating (Elo, random play = 0), parent; why production may rate lower."""
    from zeroloop.control.standing import standing
    from zeroloop.pipeline.ratings import RELATIVE_TO, ratings

    with open_app() as zl:
        models = zl.models.list_models(config_key, limit=limit)
        with zl.store.read() as conn:
            rated = ratings(conn, [model.id for model in models], zl.settings.workload.elo_confidence)
            keys = sorted({model.config_key for model in models if model.stage == "production"})
            standings = [found for key in keys if (found := standing(conn, key, zl.settings)) and found["rated_above"]]
    confidence = zl.settings.workload.elo_confidence
    columns = (
        Column("model", key=True),
        Column("stage"),
        Column(f"Elo ({RELATIVE_TO}, {confidence:.0%})"),
        Column("parent", drop=2),
        Column("created", drop=1),
        Column("promoted", drop=3),
    )
    colour = {"production": "green", "rejected": "red", "archived": "dim", "candidate": "yellow"}
    rows = [
        [
            escape(model.id),
            f"[{colour[model.stage]}]{model.stage}[/{colour[model.stage]}]",
            str(rated[model.id]),
            escape(model.parent_id or "-"),
            _when(model.created_at),
            _when(model.promoted_at),
        ]
        for model in models
    ]
    console.print(fitted(columns, rows, width=console.width) if models else "no models yet")
    for found in standings:
        best = found["rated_above"][0]
        console.print(
            f"[dim]{escape(found['config_key'])}: production {escape(found['model_id'])} rates below "
            f"{escape(best['model_id'])} ({best['stage']}) by {best['difference']:.0f}, "
            f"{'within' if best['intervals_overlap'] else 'beyond'} their intervals: production is the newest model "
            "that passed the promotion gate, not the highest rated "
            f"(`zeroloop models show {escape(found['model_id'])}` says why)[/dim]"
        )


@app.command("show", epilog=examples("zeroloop models show tic_tac_toe_2p-0003"))
def show(model_id: str = typer.Argument(..., help="The model id, as `zeroloop models ls` prints it.")) -> None:
    """Show one model: lineage, artifact, metadata, every match it played and, for production, why it is."""
    from zeroloop.control.standing import standing
    from zeroloop.pipeline.ratings import match_difference, ratings, signed

    with open_app() as zl:
        model = zl.models.get(model_id)
        matches = zl.models.matches(model_id)
        with zl.store.read() as conn:
            rating = ratings(conn, [model_id], zl.settings.workload.elo_confidence)[model_id]
            found = standing(conn, model.config_key, zl.settings) if model.stage == "production" else None
    console.print(f"[bold]{model.id}[/bold]: {model.stage}, {rating.describe()}")
    if rating.rated:
        console.print(f"  fitted jointly from {rating.games:.0f} games against {rating.opponents} opponents")
    for label, value in (
        ("config key", model.config_key),
        ("artifact sha256", model.artifact_sha256),
        ("parent", model.parent_id or "-"),
        ("training window", model.window_sha256 or "-"),
        ("jobs", ", ".join(map(str, model.job_ids)) or "-"),
        ("created", _when(model.created_at)),
        ("promoted", _when(model.promoted_at)),
        ("metadata", json.dumps(model.meta, sort_keys=True)),
    ):
        console.print(f"  {label:16} {escape(str(value))}")
    if matches:
        table = Table("opponent", "won", "drew", "lost", "Elo difference (this match)", title="matches")
        for match in matches:
            diff, half = match_difference(
                match["wins"], match["draws"], match["losses"], zl.settings.workload.elo_confidence
            )
            table.add_row(
                escape(match["player_b"]),
                str(match["wins"]),
                str(match["draws"]),
                str(match["losses"]),
                f"{signed(diff)} ± {half:.0f}",
            )
        console.print(table)
    if found is not None:
        console.print("[bold]why it is production[/bold]")
        for line in found["lines"]:
            console.print(f"  - {escape(line)}")


@app.command("promote", epilog=examples("zeroloop models promote tic_tac_toe_2p-0003"))
def promote(model_id: str = typer.Argument(..., help="The model to make production.")) -> None:
    """Make a model the production model of its config key by hand (recorded as a manual promotion)."""
    with open_app() as zl:
        changed = zl.models.promote(model_id, reason="manual")
    console.print(f"{model_id} is {'now' if changed else 'already'} the production model")


@app.command("rollback", epilog=examples("zeroloop models rollback tic_tac_toe_2p"))
def rollback(config_key: str = typer.Argument(..., help="The config key whose production model to roll back.")) -> None:
    """Return a config key to its previous production model; the current one is marked rejected."""
    with open_app() as zl:
        restored = zl.models.rollback(config_key)
    console.print(f"{config_key}: production model is {restored.id} again")
