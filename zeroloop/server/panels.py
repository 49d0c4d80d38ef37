"""Which charts each dashboard page draws, from which series: one builder per chart, by name.

A page draws its charts from one read of its series (zeroloop.control.series); the
one-chart page (`/dashboard/charts/NAME`) draws a single one of them larger and alone, so
a chart has an address to share and a screenshot of its own. `PIPELINE`, `QUEUE` and
`NODES` list the chart names of each page in the order they are drawn.
"""

from __future__ import annotations

from typing import Any

from zeroloop.server import charts
from zeroloop.server.charts import STATE_COLOURS, Line

Charts = dict[str, str]


def _xy(points: list[list[float]]) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in points]


def strength(series: dict[str, Any], key: str) -> Charts:
    """The joint ratings of a pipeline's models over time, against selfplay samples and against compute."""
    found = series["strength"]
    models = found["models"]
    y_label = f"Elo ({found['relative_to']})"
    unplaced = (
        f"; {found['unplaced']} model(s) trained before the first reading are not placed" if found["unplaced"] else ""
    )
    measure = found["compute"]
    drawn = {
        "elo_time": charts.rating_chart(
            "elo_time", f"{key}: Elo of each model when trained, rated now", models, lambda m: m["created_at"],
            x_time=True, y_label=y_label,
        ),
        "elo_samples": charts.rating_chart(
            "elo_samples", f"{key}: Elo against selfplay samples{unplaced}", models, lambda m: m["samples_total"],
            x_label="selfplay samples played before the model was trained", y_label=y_label,
            empty="no rated model placed yet: samples come from the leader's readings",
        ),
        "elo_compute": charts.rating_chart(
            "elo_compute", f"{key}: Elo against {measure['label']}", models,
            lambda m: m["cpu_h"] if measure["field"] == "cpu_s" else m["slot_h"],
            x_label=f"{measure['label']} used before the model was trained", y_label=y_label,
            empty="no rated model placed yet: compute comes from the leader's readings",
        ),
    }  # fmt: skip
    if found["gpu_hours"]:
        drawn["elo_gpu"] = charts.rating_chart(
            "elo_gpu", f"{key}: Elo against GPU-hours (job wall time times GPUs per slot)", models,
            lambda m: m["gpu_h"], x_label="GPU-hours used before the model was trained", y_label=y_label,
        )  # fmt: skip
    return drawn


def training(series: dict[str, Any], key: str) -> Charts:
    """Loss per step of the newest training runs; the loss and its parts of the newest run, when it reports them."""
    runs = series["training_runs"]
    lines = [
        Line(
            f"round {run['iteration']}" if run["iteration"] is not None else f"job {run['job_id']}",
            [(p["step"], p["loss"]) for p in run["points"]],
            dashed=not run["finished"],
        )
        for run in runs
    ]
    drawn = {
        "training_loss": charts.line_chart(
            "training_loss", f"{key}: training loss per step, newest runs (dashed: running)", lines,
            x_label="step", y_label="loss", empty="no training run reported its loss yet",
        )
    }  # fmt: skip
    newest = runs[-1] if runs else None
    parts = [name for name in ("policy_loss", "value_loss") if newest and any(name in p for p in newest["points"])]
    if newest is not None:
        lines = [Line("loss", [(p["step"], p["loss"]) for p in newest["points"]])]
        lines += [Line(name, [(p["step"], p[name]) for p in newest["points"] if name in p]) for name in parts]
        why = "" if parts else " (this run reports no parts)"
        drawn["loss_parts"] = charts.line_chart(
            "loss_parts", f"{key}: loss and its parts, job {newest['job_id']}{why}", lines, x_label="step",
            y_label="loss", y_zero=True,
        )  # fmt: skip
    return drawn


def selfplay(series: dict[str, Any], key: str) -> Charts:
    """Selfplay games per second over time, and selfplay samples per round beside the window each trained on."""
    found = series["selfplay"]
    rounds = series["rounds"]
    new = [(r["round"], r["new_samples"]) for r in rounds if r.get("new_samples") is not None]
    window = [(r["round"], r["export"]["source_samples"]) for r in rounds if "source_samples" in r.get("export", {})]
    return {
        "games_per_s": charts.line_chart(
            "games_per_s", f"{key}: selfplay games per second", [Line("games/s", _xy(found["games_per_s"]))],
            x_time=True, y_label="games/s", y_zero=True, empty="no readings of this pipeline yet",
        ),
        "samples_per_round": charts.bar_chart(
            "samples_per_round", f"{key}: samples per round",
            [Line("played since the previous round", new), Line("in the round's training window", window)],
            x_label="round", y_label="samples", empty="no round exported yet",
        ),
    }  # fmt: skip


def diagnostics(series: dict[str, Any], key: str) -> Charts:
    """One small chart per panel of per-round learning diagnostics (zeroloop.control.series.diagnostics)."""
    drawn = {}
    for panel in series["diagnostics"]["panels"]:
        lines = [Line(name.split(".", 1)[1], _xy(points)) for name, points in panel["series"].items()]
        name = f"round_{panel['name']}"
        drawn[name] = charts.line_chart(name, panel["title"], lines, x_label="round", small=True, x_whole=True)
    return drawn


def pipeline(series: dict[str, Any], key: str) -> dict[str, Charts]:
    """Every chart of a pipeline's page, by section."""
    return {
        "strength": strength(series, key),
        "training": training(series, key),
        "selfplay": selfplay(series, key),
        "diagnostics": diagnostics(series, key),
    }


def queue(series: dict[str, Any]) -> Charts:
    """Queue depth and waits by job type over time."""
    return {
        "queue_depth": charts.line_chart(
            "queue_depth", "jobs queued by type", [Line(t, _xy(p)) for t, p in series["queued"].items()],
            x_time=True, y_label="jobs", y_zero=True, y_whole=True,
            empty="no readings yet: the leader takes one a minute",
        ),
        "queue_wait": charts.line_chart(
            "queue_wait", "mean wait from due to claim, of the jobs finished between readings",
            [Line(t, _xy(p)) for t, p in series["mean_wait_s"].items()], x_time=True, y_label="seconds",
            y_zero=True, empty="no job finished between two readings yet",
        ),
        "queue_oldest": charts.line_chart(
            "queue_oldest", "wait of the oldest due job, by type",
            [Line(t, _xy(p)) for t, p in series["oldest_due_s"].items()], x_time=True, y_label="seconds",
            y_zero=True, empty="no job waited at a reading yet",
        ),
    }  # fmt: skip


def nodes(series: dict[str, Any]) -> Charts:
    """Nodes by state and cost over time."""
    return {
        "node_states": charts.line_chart(
            "node_states", "nodes by state", [Line(s, _xy(p)) for s, p in series["states"].items()], x_time=True,
            y_label="nodes", y_zero=True, y_whole=True, colours=STATE_COLOURS,
            empty="no readings yet: the leader takes one a minute",
        ),
        "cost_per_hour": charts.line_chart(
            "cost_per_hour", "fleet cost per hour (billed nodes)", [Line("per hour", _xy(series["cost_per_hour"]))],
            x_time=True, y_label="currency/h", y_zero=True, empty="no readings yet",
        ),
        "cost_total": charts.line_chart(
            "cost_total", "fleet cost so far", [Line("so far", _xy(series["cost_total"]))], x_time=True,
            y_label="currency", y_zero=True, empty="no readings yet",
        ),
    }  # fmt: skip


PIPELINE = ("elo_time", "elo_samples", "elo_compute", "elo_gpu", "training_loss", "loss_parts", "games_per_s",
            "samples_per_round")  # fmt: skip
QUEUE = ("queue_depth", "queue_wait", "queue_oldest")
NODES = ("node_states", "cost_per_hour", "cost_total")
