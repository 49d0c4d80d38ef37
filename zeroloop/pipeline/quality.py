"""The selfplay quality monitor: per config, what the newest game batches say about the games.

Every `evaluation.feedback_interval_s` (the leader) it pools the game batches recorded
since its last look at each config key (newer than the newest batch it saw then), from
the counts each batch's manifest entry carries, and records one `quality` decision with
the figures: `ok`, or `warning` with the reasons. What a batch records decides what can be judged:

| figure | from the counts | flagged when |
| --- | --- | --- |
| mean game length (moves) | `positions` / `games` | it falls by more than `quality_max_length_drop` |
| search evaluations per move | `evaluations` / `positions` | never (shown) |
| draw rate | `draws` / `games` | above `quality_max_draw_rate` |
| policy entropy (nats) | `policy_entropy`, mean per position | below `quality_min_policy_entropy` |
| value calibration | `value_mse`, root value against outcome | never (shown) |

The last three only where batches record those counts; a fall in game length is against
the previous look's mean.

**Bad data stays out.** Each new batch is also judged on its own: a batch whose games are
degenerate (mean length below (1 - `quality_max_length_drop`) of the previous look's
mean), that holds one outcome only (at least `quality_min_games` games, all with the same
outcome vector: `distinct_outcomes` is 1), or whose search policy collapsed (entropy below
`quality_min_policy_entropy`) is flagged. With `quality_exclude_flagged` on, the look's
decision lists the flagged batches with their reasons (`excluded_batches`, sha256 ->
reasons; its outcome is `warning`), and the pipeline's progress record keeps the newest
`EXCLUDED_KEPT` of them (`quality.excluded`), which the coordinator leaves out of every
later training window.

A figure whose count no batch carries is reported as not recorded (null), never guessed.
The built-in AlphaZero selfplay records games, positions and evaluations today.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Connection

from zeroloop.config import EvaluationSettings, Settings
from zeroloop.events.bus import EventBus
from zeroloop.events.wiring import declare
from zeroloop.store.database import Store
from zeroloop.store.queries import artifacts as artifact_queries
from zeroloop.store.queries import pipelines as queries

log = logging.getLogger(__name__)
declare("zeroloop.pipeline.quality", emits=("QUALITY_WARNING",))

BATCHES_PER_LOOK = 1000  # newest batches read per look (more than a look's worth at any realistic rate)
EXCLUDED_KEPT = 1000  # flagged batches remembered per config (more than any window holds)
OPTIONAL = ("draws", "policy_entropy", "value_mse")


def figures(batches: list[dict[str, Any]]) -> dict[str, Any]:
    """Pool the counts of game batches into the monitor's figures; None for a figure no batch records."""
    games = sum(float(b.get("games", 0)) for b in batches)
    positions = sum(float(b.get("positions", b.get("samples", 0))) for b in batches)
    evaluations = sum(float(b.get("evaluations", 0)) for b in batches)
    result: dict[str, Any] = {
        "batches": len(batches),
        "games": games,
        "mean_moves": positions / games if games else None,
        "evaluations_per_move": evaluations / positions if positions and evaluations else None,
    }
    recording = {name: [b for b in batches if name in b] for name in OPTIONAL}
    drawn = recording["draws"]
    drawn_games = sum(float(b.get("games", 0)) for b in drawn)
    result["draw_rate"] = sum(float(b["draws"]) for b in drawn) / drawn_games if drawn_games else None
    for name in ("policy_entropy", "value_mse"):
        weighted = recording[name]
        weight = sum(float(b.get("positions", 1)) for b in weighted)
        result[name] = sum(float(b[name]) * float(b.get("positions", 1)) for b in weighted) / weight if weight else None
    return result


def judge(now: dict[str, Any], before: dict[str, Any] | None, settings: EvaluationSettings) -> list[str]:
    """The warnings the figures raise (empty: ok)."""
    warnings = []
    previous = (before or {}).get("mean_moves")
    if (
        previous
        and now["mean_moves"] is not None
        and now["mean_moves"] < previous * (1 - settings.quality_max_length_drop)
    ):
        warnings.append(f"games got shorter: {now['mean_moves']:.1f} moves, {previous:.1f} before")
    if now["draw_rate"] is not None and now["draw_rate"] > settings.quality_max_draw_rate:
        warnings.append(f"draw rate {now['draw_rate']:.0%} is above {settings.quality_max_draw_rate:.0%}")
    if now["policy_entropy"] is not None and now["policy_entropy"] < settings.quality_min_policy_entropy:
        warnings.append(
            f"policy entropy {now['policy_entropy']:.3f} nats is below {settings.quality_min_policy_entropy}"
        )
    return warnings


def batch_problems(batch: dict[str, Any], reference_moves: float | None, settings: EvaluationSettings) -> list[str]:
    """Why one game batch (its manifest counts) should stay out of training windows (empty: it may go in)."""
    games = float(batch.get("games", 0))
    if games < 1:
        return []
    problems = []
    moves = float(batch.get("positions", batch.get("samples", 0))) / games
    if reference_moves and moves < reference_moves * (1 - settings.quality_max_length_drop):
        problems.append(f"degenerate games: {moves:.1f} moves each against {reference_moves:.1f} before")
    if "distinct_outcomes" in batch and games >= settings.quality_min_games and batch["distinct_outcomes"] <= 1:
        problems.append(f"one outcome only in {games:.0f} games")
    if "policy_entropy" in batch and float(batch["policy_entropy"]) < settings.quality_min_policy_entropy:
        problems.append(f"policy entropy collapsed: {float(batch['policy_entropy']):.3f} nats")
    return problems


def excluded_batches(progress: dict[str, Any] | None) -> set[str]:
    """The game batches (sha256) the monitor flagged for a config, from its pipeline's progress record."""
    return set((((progress or {}).get("quality")) or {}).get("excluded") or [])


class SelfplayQualityMonitor:
    """Looks at each config's new game batches and records a `quality` decision; run it on the leader only."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        fence: Callable[[Connection], None] | None = None,
        bus: EventBus | None = None,
    ) -> None:
        """`fence(conn)` refuses the look's writes unless this process still leads; `bus` announces warnings."""
        self.bus = bus
        self.store = store
        self.settings = settings.evaluation
        self.clock = clock
        self.fence = fence

    def tick(self) -> dict[str, dict[str, Any]]:
        """Look at every unpaused config's batches since the last look; return the figures by config key."""
        now = self.clock()
        looked: dict[str, dict[str, Any]] = {}
        with self.store.transaction() as conn:
            if self.fence is not None:
                self.fence(conn)
            for state in queries.list_pipelines(conn):
                if state["paused"]:
                    continue
                key = state["config_key"]
                before = ((state["progress"] or {}).get("quality")) or None
                since = float(before["newest_batch_at"]) if before else float("-inf")
                # Accepted outputs only, as the windows take them: a deposed holder's late batch counts nowhere.
                rows = artifact_queries.window_batches(conn, key, limit=BATCHES_PER_LOOK)
                rows = [row for row in rows if float(row["created_at"]) > since]
                if not rows:
                    continue
                batches = [dict(row["meta"] or {}) for row in rows]
                newest = max(float(row["created_at"]) for row in rows)
                found = figures(batches)
                warnings = judge(found, before, self.settings)
                flagged: dict[str, list[str]] = {}
                if self.settings.quality_exclude_flagged:
                    reference = (before or {}).get("mean_moves")
                    for row, batch in zip(rows, batches, strict=True):
                        problems = batch_problems(batch, reference, self.settings)
                        if problems:
                            flagged[str(row["sha256"])] = problems
                if flagged:
                    warnings.append(f"{len(flagged)} of {len(rows)} game batches kept out of training windows")
                queries.insert_decision(
                    conn,
                    config_key=key,
                    kind="quality",
                    outcome="warning" if warnings else "ok",
                    evidence={
                        **found,
                        "excluded_batches": flagged,
                        "since": None if before is None else since,
                        "reason": "; ".join(warnings) if warnings else _summary(found),
                    },
                    now=now,
                )
                if warnings:
                    log.warning("%s: selfplay quality: %s", key, "; ".join(warnings))
                    if self.bus is not None:  # the decision and its alert commit together
                        self.bus.publish("QUALITY_WARNING", {"config_key": key, "warnings": warnings, "figures": found})
                excluded = [*((before or {}).get("excluded") or []), *flagged][-EXCLUDED_KEPT:]
                record = {**found, "at": now, "newest_batch_at": newest, "excluded": excluded}
                queries.merge_progress(conn, key, {"quality": record}, now)
                looked[key] = found
        return looked


def _summary(found: dict[str, Any]) -> str:
    parts = [f"{found['games']:.0f} games"]
    if found["mean_moves"] is not None:
        parts.append(f"{found['mean_moves']:.1f} moves each")
    for label, name, form in (
        ("draws", "draw_rate", "{:.0%}"),
        ("policy entropy", "policy_entropy", "{:.2f} nats"),
        ("value MSE", "value_mse", "{:.3f}"),
    ):
        parts.append(f"{label} {form.format(found[name])}" if found[name] is not None else f"{label} not recorded")
    return ", ".join(parts)
