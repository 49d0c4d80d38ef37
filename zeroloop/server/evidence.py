"""Decisions and event payloads as a reader takes them in: a sentence, labelled facts and small tables, never JSON.

`readable(kind, evidence)` turns any evidence record into `{"headline", "facts", "tables"}`:

- the headline is the record's `reason` (every loop writes one), else its kind and outcome
  (none for an event without a reason);
- every match tally (a mapping with `wins`, `draws` and `losses`) becomes a row of the
  results table, with its score and the match's own Elo difference and interval: a
  promotion's results against production and each baseline, production's own against the
  baselines, a watchdog's head-to-head record;
- a mapping of names to lists (the quality monitor's flagged batches and their reasons)
  becomes a table of its own, a mapping of names to numbers or words (backpressure by job
  type, Elo velocity by config, joint ratings) one fact listing them;
- everything else is a fact: its name in words, numbers rounded, epoch times (`*_at`,
  `now`, `since`) in local time, lists joined, nested mappings flattened as `outer inner`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from zeroloop.pipeline.ratings import match_difference, signed

_TIMES = ("now", "since", "at")
_LABELS = {
    "vs_best": "against production",
    "vs_baselines": "against",
    "best_vs_baselines": "production against",
    "joint_elo": "joint Elo at the decision",
    "model_id": "model",
    "restored_model_id": "restored model",
    "elo_upper": "Elo upper bound",
    "bound_elo": "rollback bound (Elo)",
    "excluded_batches": "batches kept out of training",
}


def _label(key: str) -> str:
    return _LABELS.get(key, key.replace("_", " "))


def _is_time(key: str) -> bool:
    return key in _TIMES or key.endswith("_at")


def _text(key: str, value: Any) -> str:
    """One value as a fact shows it."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float) and _is_time(key) and value > 1e8:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    if isinstance(value, list | tuple):
        return ", ".join(_text(key, item) for item in value) or "none"
    if isinstance(value, Mapping):
        return ", ".join(f"{name} {_text(str(name), item)}" for name, item in value.items()) or "none"
    return str(value)


def _tally(value: Any) -> bool:
    return isinstance(value, Mapping) and all(isinstance(value.get(k), int) for k in ("wins", "draws", "losses"))


def _result_row(who: str, tally: Mapping[str, Any], confidence: float) -> list[str]:
    wins, draws, losses = int(tally["wins"]), int(tally["draws"]), int(tally["losses"])
    games = wins + draws + losses
    diff, half = match_difference(wins, draws, losses, confidence)
    score = f"{(wins + draws / 2) / games:.2f}" if games else "-"
    return [who, str(wins), str(draws), str(losses), score, f"{signed(diff)} ± {half:.0f}" if games else "-"]


def readable(kind: str, outcome: str, evidence: Mapping[str, Any], confidence: float = 0.95) -> dict[str, Any]:
    """A decision's evidence as a headline, facts ([label, text]) and tables ({title, columns, rows})."""
    headline = str(evidence.get("reason") or (f"{kind}: {outcome}" if outcome else ""))
    facts: list[list[str]] = []
    results: list[list[str]] = []
    tables: list[dict[str, Any]] = []
    production = next((name for name in (evidence.get("joint_elo") or {}) if name != evidence.get("model_id")), None)
    if _tally(evidence):
        other = evidence.get("restored_model_id") or evidence.get("opponent")
        who = f"{evidence.get('model_id', 'this model')} against {other}" if other else "the record"
        results.append(_result_row(who, evidence, confidence))
    for key, value in evidence.items():
        if key in ("reason", "wins", "draws", "losses") and (key == "reason" or _tally(evidence)):
            continue
        if _tally(value):
            who = f"against production ({production})" if key == "vs_best" and production else _label(key)
            results.append(_result_row(who, value, confidence))
        elif isinstance(value, Mapping) and value and all(_tally(item) or item is None for item in value.values()):
            for name, item in value.items():
                if item is not None:
                    results.append(_result_row(f"{_label(key)} {name}", item, confidence))
        elif isinstance(value, Mapping) and value and all(isinstance(item, list) for item in value.values()):
            rows = [[str(name), _text(key, item)] for name, item in value.items()]
            tables.append({"title": _label(key), "columns": ["", "why"], "rows": rows})
        elif isinstance(value, Mapping) and any(isinstance(item, Mapping) for item in value.values()):
            for name, item in value.items():
                facts.append([f"{_label(key)} {name}", _text(str(name), item)])
        elif isinstance(value, Mapping) and not value:
            continue  # an empty record says nothing (no baseline results of production yet)
        elif key == "vs_best" and value is None:
            facts.append([_label(key), "no production model yet"])
        else:
            facts.append([_label(key), _text(key, value)])
    if results:
        columns = ["", "won", "drew", "lost", "score", f"Elo (this match, {confidence:.0%})"]
        tables.insert(0, {"title": "results", "columns": columns, "rows": results})
    return {"headline": headline, "facts": facts, "tables": tables}
