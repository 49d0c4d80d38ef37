"""`zeroloop tune`: population-based training of a config key's settings, its results, and distillation."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import typer
from rich.markup import escape

from zeroloop.cli.common import console, open_app
from zeroloop.cli.helptext import examples
from zeroloop.cli.tables import Column, fitted

app = typer.Typer(
    help="Tune a config key's settings with a population of variants; adopt the best; distill a model.",
    no_args_is_help=True,
    epilog=examples(
        "zeroloop tune start connect_four_2p --variants 6 --budget-cpu-s 3600",
        "zeroloop tune show connect_four_2p",
        "zeroloop tune adopt connect_four_2p",
    ),
)


@app.command(
    "start",
    epilog=examples(
        "zeroloop tune start connect_four_2p",
        "zeroloop tune start connect_four_2p --variants 4 --budget-cpu-s 7200 --sampler cmaes",
    ),
)
def start(
    config_key: str = typer.Argument(..., help="The config key whose settings to tune, e.g. connect_four_2p."),
    variants: int | None = typer.Option(None, min=2, max=64, help="Variants in the population [tune.variants]."),
    budget_cpu_s: float | None = typer.Option(
        None, help="CPU-seconds the population's jobs may spend [tune.budget_cpu_s, when no budget is given]."
    ),
    budget_gpu_s: float | None = typer.Option(None, help="GPU-seconds the population's jobs may spend."),
    sampler: str | None = typer.Option(None, help="tpe or cmaes: proposes fresh variants' settings [tune.sampler]."),
) -> None:
    """Start a tune: the leader proposes each variant's settings, starts it as a pipeline, and exploits and explores."""
    from zeroloop.tune import manager

    with open_app() as zl:
        tune_id = manager.start(
            zl,
            config_key,
            variants=variants,
            budget_cpu_s=budget_cpu_s,
            budget_gpu_s=budget_gpu_s,
            sampler_name=sampler,
        )
        size = variants or zl.settings.tune.variants
    console.print(
        f"tune {tune_id} of {config_key}: {size} variants ({config_key}~t{tune_id}v1 ...) start on the leader's next "
        f"look; follow it with `zeroloop tune show {config_key}`"
    )


def _when(epoch: float | None) -> str:
    return dt.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M") if epoch else "-"


def _setting(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _budget(tune: dict[str, Any]) -> str:
    parts = [
        f"{tune[f'spent_{kind}_s']:.0f} of {tune[f'budget_{kind}_s']:.0f} {kind.upper()}-s"
        for kind in ("cpu", "gpu")
        if tune[f"budget_{kind}_s"] is not None
    ]
    return ", ".join(parts) or f"{tune['spent_cpu_s']:.0f} CPU-s"


@app.command("show", epilog=examples("zeroloop tune show connect_four_2p", "zeroloop tune show connect_four_2p --json"))
def show(
    config_key: str = typer.Argument(..., help="The tuned config key."),
    as_json: bool = typer.Option(False, "--json", help="Print the tune and every trial as JSON."),
) -> None:
    """What the newest tune of a config key tried: each variant's settings, origin, rating and CPU-seconds."""
    from zeroloop.tune import manager

    with open_app() as zl:
        tune = manager.latest(zl, config_key)
    if as_json:
        typer.echo(json.dumps(tune, indent=2, default=str))
        return
    console.print(
        f"[bold]tune {tune['id']} of {escape(config_key)}[/bold]: {tune['status']}"
        + (f" ({escape(tune['reason'])})" if tune["reason"] else "")
        + f", {tune['variants']} variants, {tune['sampler']}, spent {_budget(tune)}"
        + f", started {_when(tune['created_at'])}"
        + (f", adopted {_when(tune['adopted_at'])}" if tune["adopted_at"] else "")
    )
    error = (tune["progress"] or {}).get("last_error")
    if error:
        console.print(f"[red]last step failed[/red] at {_when(error['at'])}: {escape(error['error'])}")
    names = sorted({name for trial in tune["trials"] for name in trial["settings"]})
    columns = (
        Column("variant", key=True),
        Column("#"),
        Column("origin"),
        Column("status"),
        Column("Elo"),
        Column("CPU-s"),
        *(Column(name, drop=3) for name in names),
    )
    rows = []
    for trial in tune["trials"]:
        origin = trial["origin"] if trial["parent_id"] is None else f"{trial['origin']} #{trial['parent_id']}"
        elo = "-" if trial["elo"] is None else f"{trial['elo']:.0f} ± {1.96 * (trial['elo_stderr'] or 0):.0f}"
        rows.append(
            [
                escape(trial["variant"].split("~", 1)[1]),
                str(trial["id"]),
                origin,
                trial["status"] + (f": {escape(trial['reason'])}" if trial["status"] == "dropped" else ""),
                elo,
                f"{trial['cpu_s']:.0f}",
                *(_setting(trial["settings"].get(name, "-")) for name in names),
            ]
        )
    console.print(fitted(columns, rows, width=console.width) if rows else "no variants yet: the leader starts them")


@app.command(
    "adopt",
    epilog=examples("zeroloop tune adopt connect_four_2p", "zeroloop tune adopt connect_four_2p --variant t1v3"),
)
def adopt(
    config_key: str = typer.Argument(..., help="The tuned config key."),
    variant: str | None = typer.Option(None, help="Adopt this variant (e.g. t1v3) instead of the best rated."),
) -> None:
    """Make the best variant's model the config key's production model; its settings come with it."""
    from zeroloop.cli.config_toml import to_toml
    from zeroloop.tune import manager

    with open_app() as zl:
        full = f"{config_key}~{variant}" if variant and "~" not in variant else variant
        record = manager.adopt(zl, config_key, variant=full)
    console.print(
        f"{escape(config_key)}: production is now {escape(record['model_id'])}, "
        f"copied from {escape(record['variant'])} "
        f"({record['elo']:.0f} Elo); its pipeline plays and trains with these settings from its next job. "
        "To make them the config's own, add to zeroloop.toml:"
    )
    overrides = {"workload": {"overrides": {config_key: record["settings"]}}}
    typer.echo(to_toml(overrides).rstrip("\n"))


@app.command("stop", epilog=examples("zeroloop tune stop connect_four_2p"))
def stop(config_key: str = typer.Argument(..., help="The tuned config key.")) -> None:
    """Stop the running tune: its variants are paused and their queued selfplay cancelled."""
    from zeroloop.tune import manager

    with open_app() as zl:
        tune_id = manager.stop(zl, config_key)
    console.print(f"tune {tune_id} of {escape(config_key)} stopped")


@app.command(
    "distill",
    epilog=examples(
        "zeroloop tune distill connect_four_2p --blocks 2 --channels 32",
        "zeroloop tune distill connect_four_2p --blocks 1 --channels 16 --teacher connect_four_2p-0013-1a2b3c4d",
    ),
)
def distill(
    config_key: str = typer.Argument(..., help="The config key whose model to distill."),
    blocks: int = typer.Option(..., min=0, help="Residual blocks of the smaller network."),
    channels: int = typer.Option(..., min=1, help="Channels of the smaller network."),
    teacher: str | None = typer.Option(None, help="The model to distill (default: the production model)."),
    steps: int | None = typer.Option(None, min=1, help="Optimizer steps [tune.distill_steps]."),
) -> None:
    """Train a smaller network on a model's data and targets; it is rated like any model once trained."""
    from zeroloop.tune import manager

    with open_app() as zl:
        job_id = manager.distill(zl, config_key, blocks=blocks, channels=channels, teacher=teacher, steps=steps)
    console.print(
        f"distillation queued as job {job_id}; its model and rating appear in `zeroloop models ls {config_key}`"
    )
