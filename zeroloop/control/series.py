"""The time series the dashboard charts and `/api/.../series` serves: read functions over one App.

Like `zeroloop.control.views`, each function reads the store through the named query
catalogue and returns plain data (points are `[x, y]` pairs; times epoch seconds), so a
chart and its JSON show the same numbers. Sources:

- the leader's readings (zeroloop.control.readings): queue depth and waits by job type,
  nodes by state, cost, and per config key its samples, games and compute so far;
- the event log: each training run's loss per step (TRAINING_PROGRESS);
- the jobs table: the evidence counts of each round's export and train jobs;
- the model registry: each model's joint rating, placed at the samples and compute its
  pipeline had used when the model was trained (interpolated between readings).
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Connection

from zeroloop.control.readings import SETTLE_S
from zeroloop.errors import ZeroloopError
from zeroloop.pipeline.ratings import RELATIVE_TO, of_record
from zeroloop.ports import AppParts
from zeroloop.store.queries import events as event_queries
from zeroloop.store.queries import models as model_queries
from zeroloop.store.queries import pipelines as pipeline_queries
from zeroloop.store.queries import readings as reading_queries
from zeroloop.store.queries import series as series_queries

DEFAULT_HOURS = 24.0
"""How far back the charts over time look by default (hours)."""
MAX_HOURS = 24.0 * 366
"""The furthest back a chart over time may be asked to look (hours)."""
MAX_READINGS = 600
"""The most readings a series over time is drawn from: a longer range is read at evenly spread readings."""
TRAINING_RUNS = 5
"""Training runs whose loss per step is drawn (the newest)."""
ROUNDS = 60
"""Rounds whose export and train evidence is drawn (the newest)."""
_TRAINING_EVENTS = 5000  # newest training events read for the loss curves
_MODELS = 500  # newest models placed on the strength charts
TRAINING_EVENTS = ("TRAINING_STARTED", "TRAINING_PROGRESS", "TRAINING_COMPLETED")
LOSS_PARTS = ("policy_loss", "value_loss")
"""The parts of the training loss a progress report may carry beside `loss`."""

FAMILIES: tuple[tuple[str, str, re.Pattern[str]], ...] = (
    ("losses", "losses after training", re.compile(r"^train\.(loss|policy_loss|value_loss)$")),
    ("value_accuracy", "value accuracy by game stage (share)", re.compile(r"^train\.value_accuracy_")),
    ("value_error", "value error by game stage (mean squared)", re.compile(r"^train\.value_mse_")),
    ("policy", "policy entropy (nats) and agreement", re.compile(r"^train\.(policy|target)_(entropy|agreement)$")),
    ("outcomes", "outcome shares of the window's games", re.compile(r"^export\.outcome_")),
    ("lengths", "game length (positions)", re.compile(r"^export\.length_")),
)
"""Per-round counts drawn together, by name; every other numeric count gets a panel of its own."""


def hours_of(hours: float | None) -> float:
    """`hours` checked (a positive finite number of hours, at most MAX_HOURS), DEFAULT_HOURS when None."""
    if hours is None:
        return DEFAULT_HOURS
    if not (math.isfinite(hours) and 0 < hours <= MAX_HOURS):
        raise ZeroloopError(f"hours must be above 0 and at most {MAX_HOURS:.0f}, got {hours}")
    return hours


def _number(value: Any) -> float | None:
    """`value` as a finite float, or None for anything else (booleans, text, NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _readings(app: AppParts, hours: float | None) -> tuple[float, list[dict[str, Any]]]:
    """The readings of the last `hours`, at most MAX_READINGS of them, evenly spread and the newest always in."""
    since = app.clock() - hours_of(hours) * 3600.0
    with app.store.read() as conn:
        times = reading_queries.reading_times(conn, since=since)
        step = max(1.0, len(times) / MAX_READINGS)
        picked = {times[min(len(times) - 1, int((i + 1) * step) - 1)][0] for i in range(int(len(times) / step))}
        picked |= {times[-1][0]} if times else set()
        rows = reading_queries.readings_by_id(conn, sorted(picked))
    return since, [{"at": float(row["at"]), "figures": row["figures"] or {}} for row in rows]


def _by_name(rows: list[dict[str, Any]], section: str, field: str | None) -> dict[str, list[list[float]]]:
    """One series per name under `section` of each reading (`field` of it, or the value itself), absent as 0.

    A name absent from a reading after it first appeared reads 0 there for counts; for a
    field that may be unknown (None) the point is left out.
    """
    series: dict[str, list[list[float]]] = {}
    for row in rows:
        found = row["figures"].get(section) or {}
        for name in sorted(set(found) | set(series)):
            value = found.get(name)
            if field is not None:
                value = (value or {}).get(field, 0 if field in ("queued", "running", "due") else None)
            number = _number(0 if value is None and field is None else value)
            if number is not None:
                series.setdefault(name, []).append([row["at"], number])
    return series


def queue_series(app: AppParts, hours: float | None = None) -> dict[str, Any]:
    """Per job type over the last `hours`: jobs queued and running, and waits (seconds).

    `mean_wait_s`: the mean wait from due to claim of the jobs that finished in a reading's
    counting window, placed at the window's end (zeroloop.control.readings); `oldest_due_s`:
    how long the oldest due job had waited at the reading.
    """
    since, rows = _readings(app, hours)
    # A reading's waits are of the jobs finished in its counting window, which ends at its `counted_until`.
    windows = [{**row, "at": float(row["figures"].get("counted_until", row["at"]))} for row in rows]
    return {
        "since": since,
        "queued": _by_name(rows, "queue", "queued"),
        "running": _by_name(rows, "queue", "running"),
        "mean_wait_s": _by_name(windows, "queue", "mean_wait_s"),
        "oldest_due_s": _by_name(rows, "queue", "oldest_due_s"),
    }


def node_series(app: AppParts, hours: float | None = None) -> dict[str, Any]:
    """Over the last `hours`: nodes per state, the billed nodes' cost per hour, and the cost so far (currency units)."""
    since, rows = _readings(app, hours)
    return {
        "since": since,
        "states": _by_name(rows, "nodes", None),
        "cost_per_hour": [[row["at"], float(row["figures"].get("cost_per_hour", 0.0))] for row in rows],
        "cost_total": [[row["at"], float(row["figures"].get("cost_total", 0.0))] for row in rows],
    }


def _pipeline_figures(row: Mapping[Any, Any] | None, config_key: str) -> dict[str, Any] | None:
    if row is None:
        return None
    found = ((row["figures"] or {}).get("pipelines") or {}).get(config_key)
    return found if isinstance(found, dict) else None


def selfplay_series(app: AppParts, config_key: str, hours: float | None = None) -> dict[str, Any]:
    """Over the last `hours`: selfplay games per second between readings, and the samples played so far."""
    since, rows = _readings(app, hours)
    games_per_s, samples = [], []
    previous: tuple[float, float] | None = None
    for row in rows:
        found = _pipeline_figures(row, config_key)
        if found is None:
            continue
        games = float(found.get("games_total", 0))
        samples.append([row["at"], float(found.get("samples_total", 0))])
        if previous is not None and row["at"] > previous[0] and games >= previous[1]:
            games_per_s.append([row["at"], (games - previous[1]) / (row["at"] - previous[0])])
        previous = (row["at"], games)
    return {"since": since, "games_per_s": games_per_s, "samples_total": samples}


class _Totals:
    """A config key's running totals at given times, interpolated between the readings around each (one read each)."""

    def __init__(self, conn: Connection, config_key: str, times: list[float]) -> None:
        self.config_key = config_key
        self.times: list[tuple[int, float]] = []
        self.ats: list[float] = []
        self.rows: dict[int, dict[str, Any]] = {}
        if not times:
            return
        first = reading_queries.reading_before(conn, min(times))
        self.times = reading_queries.reading_times(conn, since=float(first["at"]) if first else min(times))
        self.ats = [when for _id, when in self.times]
        wanted: set[int] = set()
        for at in times:
            for shifted in (at, at + SETTLE_S):
                wanted.update(row_id for row_id in self._around(shifted) if row_id is not None)
        self.rows = {int(row["id"]): dict(row) for row in reading_queries.readings_by_id(conn, sorted(wanted))}

    def _around(self, at: float) -> tuple[int | None, int | None]:
        """The ids of the newest reading at or before `at` and of the oldest at or after it."""
        index = bisect.bisect_right(self.ats, at)
        before = self.times[index - 1][0] if index > 0 else None
        after_index = index - 1 if index > 0 and self.times[index - 1][1] == at else index
        after = self.times[after_index][0] if after_index < len(self.times) else None
        return before, after

    def at(self, at: float, field: str, *, settled: bool) -> float | None:
        """`field` at time `at` (None before the first reading).

        With `settled`, a total is placed at its reading's `counted_until` (compute counts jobs
        up to then) rather than at the reading itself.
        """
        points: list[tuple[float, float] | None] = []
        for row_id in self._around(at + (SETTLE_S if settled else 0.0)):
            row = self.rows.get(row_id) if row_id is not None else None
            found = _pipeline_figures(row, self.config_key)
            value = None if found is None else _number(found.get(field))
            if row is None or value is None:
                points.append(None)
                continue
            when = float(row["figures"].get("counted_until", row["at"])) if settled else float(row["at"])
            points.append((when, value))
        before, after = points
        if before is None:
            return None  # before the first reading: unknown
        if after is None or after[0] <= before[0]:
            return before[1]
        share = min(1.0, max(0.0, (at - before[0]) / (after[0] - before[0])))
        return before[1] + share * (after[1] - before[1])


def compute_measure(totals: Mapping[str, Any] | None) -> dict[str, Any]:
    """The compute the strength chart is drawn against: CPU seconds when every job measured them, else wall time."""
    jobs = float((totals or {}).get("jobs", 0.0))
    measured = float((totals or {}).get("jobs_with_cpu", 0.0))
    if jobs > 0 and measured >= jobs:
        return {"field": "cpu_s", "label": "CPU-hours (measured by the workload)", "jobs": jobs, "measured": measured}
    share = f"{measured / jobs:.0%}" if jobs else "none"
    return {
        "field": "slot_s",
        "label": f"slot-hours (job wall time; {share} of jobs reported CPU time)",
        "jobs": jobs,
        "measured": measured,
    }


def strength(app: AppParts, config_key: str) -> dict[str, Any]:
    """Each rated model's joint rating, placed at its training time and the samples and compute used until then.

    `samples_total` and the compute (`cpu_h`, `slot_h`, `gpu_h`: hours) are interpolated
    between the readings around the model's creation; a model trained before the first
    reading has none of them (counted in `unplaced`).
    """
    confidence = app.settings.workload.elo_confidence
    with app.store.read() as conn:
        rows = model_queries.list_models(conn, config_key=config_key, limit=_MODELS)
        latest = _pipeline_figures(reading_queries.latest_reading(conn), config_key)
        rated = [
            (row, rating)
            for row in reversed(rows)
            if (rating := of_record((row["meta"] or {}).get("rating"), confidence)).elo is not None
        ]
        totals = _Totals(conn, config_key, [float(row["created_at"]) for row, _rating in rated])
    placed = []
    unplaced = 0
    for row, rating in rated:
        at = float(row["created_at"])
        samples = totals.at(at, "samples_total", settled=False)
        hours = {
            name: None if samples is None or (value := totals.at(at, field, settled=True)) is None else value / 3600
            for name, field in (("cpu_h", "cpu_s"), ("slot_h", "slot_s"), ("gpu_h", "gpu_s"))
        }
        if samples is None:
            unplaced += 1  # trained before the first reading: nothing to place it at
        placed.append(
            {
                "model_id": row["id"],
                "stage": row["stage"],
                "elo": rating.elo,
                "half_width": rating.half_width if math.isfinite(rating.half_width) else None,
                "created_at": at,
                "promoted_at": row["promoted_at"],
                "samples_total": samples,
                **hours,
            }
        )
    measure = compute_measure(latest)
    return {
        "relative_to": RELATIVE_TO,
        "confidence": confidence,
        "models": placed,
        "unplaced": unplaced,
        "compute": measure,
        "gpu_hours": bool(latest and float(latest.get("gpu_s", 0.0)) > 0),
    }


def training_runs(app: AppParts, config_key: str, runs: int = TRAINING_RUNS) -> list[dict[str, Any]]:
    """The newest `runs` training runs, oldest first: job, round, whether done, the loss (and its parts) per step."""
    with app.store.read() as conn:
        rows = event_queries.latest(conn, types=TRAINING_EVENTS, config_keys=[config_key], limit=_TRAINING_EVENTS)
    found: dict[int, dict[str, Any]] = {}
    for row in rows:
        payload = row["payload"]
        run = found.setdefault(
            int(payload["job_id"]),
            {"job_id": int(payload["job_id"]), "iteration": None, "finished": False, "points": []},
        )
        if row["type"] == "TRAINING_STARTED":
            run["iteration"] = payload.get("iteration")
        elif row["type"] == "TRAINING_COMPLETED":
            run["finished"] = True
        elif not run["finished"] and _number(payload.get("loss")) is not None:
            point = {"step": int(payload["step"]), "loss": float(payload["loss"])}
            point.update({part: float(payload[part]) for part in LOSS_PARTS if _number(payload.get(part)) is not None})
            run["points"].append(point)
    for run in found.values():
        steps: dict[int, dict[str, Any]] = {
            point["step"]: point for point in run["points"]
        }  # a resumed run repeats steps
        run["points"] = [steps[step] for step in sorted(steps)]
    return [found[job_id] for job_id in sorted(found)[-runs:] if found[job_id]["points"]]


def rounds(app: AppParts, config_key: str, limit: int = ROUNDS) -> list[dict[str, Any]]:
    """The newest `limit` rounds, oldest first: the numeric evidence counts of their export and train jobs, and the
    selfplay samples played between the previous round's export and this one's (`new_samples`)."""
    with app.store.read() as conn:
        if pipeline_queries.get_pipeline(conn, config_key) is None:
            raise ZeroloopError(f"no pipeline {config_key!r}: see `zeroloop pipeline ls`")
        jobs = series_queries.completed_jobs_of(conn, config_key, ("export", "train"), limit=4 * limit)
        found: dict[int, dict[str, Any]] = {}
        for job in jobs:
            iteration = (job["payload"] or {}).get("iteration")
            if not isinstance(iteration, int):
                continue
            counts = ((job["result"] or {}) if isinstance(job["result"], dict) else {}).get("counts") or {}
            entry = found.setdefault(iteration, {"round": iteration})
            entry[job["type"]] = {
                name: number for name, value in counts.items() if (number := _number(value)) is not None
            }
            if job["type"] == "export":
                entry["exported_at"] = float(job["created_at"])
        totals = _Totals(conn, config_key, [entry["exported_at"] for entry in found.values() if "exported_at" in entry])
    for entry in found.values():
        if "exported_at" in entry:
            entry["samples_then"] = totals.at(entry["exported_at"], "samples_total", settled=False)
    ordered = [found[number] for number in sorted(found)][-limit:]
    previous: float | None = None
    for entry in ordered:
        then = entry.pop("samples_then", None)
        entry["new_samples"] = None if then is None or previous is None else max(0.0, then - previous)
        previous = then if then is not None else previous
    return ordered


def diagnostics(found_rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The per-round counts as chart panels: the known families together (FAMILIES), every other count alone.

    `panels`: each with `name`, `title` and `series` (count name -> [[round, value], ...]);
    `constant`: the counts outside the families that are the same in every one of two or
    more rounds (a flat line says less than the number), by name.
    """
    metrics: dict[str, list[list[float]]] = {}
    for entry in found_rounds:
        for operation in ("export", "train"):
            for name, value in (entry.get(operation) or {}).items():
                metrics.setdefault(f"{operation}.{name}", []).append([float(entry["round"]), value])
    panels = []
    taken: set[str] = set()
    for name, title, pattern in FAMILIES:
        members = {metric: points for metric, points in sorted(metrics.items()) if pattern.match(metric)}
        if members:
            panels.append({"name": name, "title": title, "series": members})
            taken |= set(members)
    constant = {
        metric: points[0][1]
        for metric, points in sorted(metrics.items())
        if metric not in taken and len(points) > 1 and all(value == points[0][1] for _round, value in points)
    }
    for metric, points in sorted(metrics.items()):
        if metric not in taken and metric not in constant:
            panels.append({"name": metric, "title": metric, "series": {metric: points}})
    return {"panels": panels, "constant": constant}


def pipeline_series(app: AppParts, config_key: str, hours: float | None = None) -> dict[str, Any]:
    """Every series of one pipeline's charts: strength, training runs, selfplay, rounds and their diagnostics."""
    found_rounds = rounds(app, config_key)
    return {
        "config_key": config_key,
        "strength": strength(app, config_key),
        "training_runs": training_runs(app, config_key),
        "selfplay": selfplay_series(app, config_key, hours),
        "rounds": found_rounds,
        "diagnostics": diagnostics(found_rounds),
    }
