"""Why the production model is production, in words and numbers, for every screen that shows ratings.

Production is the newest model that passed the promotion gate, not the highest rated one.
The default gate (`non_inferior`) promotes a candidate that is at most
`evaluation.gate_margin_elo` weaker than the model it replaces, so that selfplay moves to
the newest network; the regression watchdog rolls production back once its head-to-head
games show it clearly weaker than its predecessor; and every rating is one joint fit of
all matches, refitted whenever a match is recorded, so a model's number moves after the
screen that showed it. `standing` gathers what a user needs to see all three at once:
how production got there (the gate's tally and reason, a manual promotion, a rollback),
its rating then and now, the models that rate above it and whether the intervals
overlap, and where the watchdog stands. docs/pipeline.md explains why production is not
picked by the joint rating.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from zeroloop.config import Settings
from zeroloop.pipeline.ratings import RELATIVE_TO, Rating, of_record, signed
from zeroloop.ports import AppParts
from zeroloop.store.queries import models as model_queries
from zeroloop.store.queries import series as series_queries
from zeroloop.workload.elo import elo_bounds

_DECISIONS_READ = 200  # newest promotion and watchdog decisions searched for how production got there


def _tally(conn: Connection, config_key: str, model_id: str, other_id: str) -> tuple[int, int, int]:
    """Every game between two models, pooled from `model_id`'s side: wins, draws, losses."""
    wins = draws = losses = 0
    for match in model_queries.matches_between(conn, config_key, model_id, other_id):
        own = match["player_a"] == model_id
        wins += match["wins"] if own else match["losses"]
        draws += match["draws"]
        losses += match["losses"] if own else match["wins"]
    return wins, draws, losses


def _rated(row: Any, confidence: float) -> Rating:
    return of_record((row["meta"] or {}).get("rating"), confidence)


def _plain(rating: Rating) -> dict[str, Any]:
    return {"elo": rating.elo, "half_width": rating.half_width if rating.rated else None, "text": str(rating)}


def _how(conn: Connection, config_key: str, model_id: str) -> dict[str, Any]:
    """How `model_id` became production: by the gate (its decision), by the watchdog's rollback, or otherwise."""
    for row in series_queries.decisions_of_kind(conn, config_key, ("promotion", "watchdog"), limit=_DECISIONS_READ):
        evidence = row["evidence"] or {}
        if row["kind"] == "promotion" and row["outcome"] == "promoted" and evidence.get("model_id") == model_id:
            return {
                "how": "gate",
                "decision_id": row["id"],
                "at": row["created_at"],
                "reason": evidence.get("reason", ""),
                "vs_best": evidence.get("vs_best"),
                "joint_elo_then": (evidence.get("joint_elo") or {}).get(model_id),
            }
        if row["kind"] == "watchdog" and evidence.get("restored_model_id") == model_id:
            return {
                "how": "watchdog",
                "decision_id": row["id"],
                "at": row["created_at"],
                "reason": evidence.get("reason", ""),
            }
    return {"how": "other"}


def standing(conn: Connection, config_key: str, settings: Settings) -> dict[str, Any] | None:
    """Why `config_key`'s production model is production (plain data, with `lines`: the same in sentences).

    None when the config key has no production model.
    """
    production = model_queries.production_model(conn, config_key)
    if production is None:
        return None
    confidence = settings.workload.elo_confidence
    evaluation = settings.evaluation.for_key(config_key)
    model_id = production["id"]
    rating = _rated(production, confidence)
    fitted = (production["meta"] or {}).get("rating") or {}
    how = _how(conn, config_key, model_id)
    predecessor_row = model_queries.previous_production(conn, config_key)
    predecessor: dict[str, Any] | None = None
    if predecessor_row is not None:
        wins, draws, losses = _tally(conn, config_key, model_id, predecessor_row["id"])
        games = wins + draws + losses
        bound = elo_bounds(wins, draws, losses, evaluation.watchdog_confidence, evaluation.rating_prior_games)
        predecessor = {
            "model_id": predecessor_row["id"],
            "rating": _plain(_rated(predecessor_row, confidence)),
            "wins": wins,
            "draws": draws,
            "losses": losses,
            "games": games,
            "elo": bound.elo if games else None,
            "elo_upper": bound.high if games else None,
            "watchdog_bound_elo": evaluation.watchdog_bound_elo,
            "watchdog_confidence": evaluation.watchdog_confidence,
            "watchdog_min_games": evaluation.watchdog_min_games,
        }
    above = []
    if rating.elo is not None:
        for row in model_queries.list_models(conn, config_key=config_key, limit=1000):
            other = _rated(row, confidence)
            if row["id"] == model_id or other.elo is None or other.elo <= rating.elo:
                continue
            overlap = other.elo - other.half_width <= rating.elo + rating.half_width
            above.append(
                {
                    "model_id": row["id"],
                    "stage": row["stage"],
                    "rating": _plain(other),
                    "difference": other.elo - rating.elo,
                    "intervals_overlap": overlap,
                }
            )
        above.sort(key=lambda item: -item["difference"])
    found = {
        "config_key": config_key,
        "model_id": model_id,
        "rating": _plain(rating),
        "relative_to": RELATIVE_TO,
        "confidence": confidence,
        "fitted_at": fitted.get("fitted_at"),
        "games": fitted.get("games"),
        "promoted_at": production["promoted_at"],
        "promotion": how,
        "gate": evaluation.gate,
        "gate_margin_elo": evaluation.gate_margin_elo,
        "predecessor": predecessor,
        "rated_above": above,
    }
    found["lines"] = explain(found)
    return found


def _result(tally: dict[str, Any] | None) -> str:
    if not tally:
        return ""
    return f"won {tally['wins']}, drew {tally['draws']}, lost {tally['losses']}"


def explain(found: dict[str, Any]) -> list[str]:
    """The standing of a production model in sentences: how it got there, what rates above it, the watchdog, the fit."""
    model_id = found["model_id"]
    how = found["promotion"]
    predecessor = found["predecessor"]
    lines = []
    if how["how"] == "gate":
        tally = _result(how.get("vs_best"))
        against = f"against {predecessor['model_id']} it {tally}; " if tally and predecessor else ""
        lines.append(f"{model_id} is production because the promotion gate accepted it: {against}{how['reason']}")
    elif how["how"] == "watchdog":
        lines.append(f"{model_id} is production again: the regression watchdog rolled back to it ({how['reason']})")
    else:
        lines.append(f"{model_id} is production by hand or by a rollback (no gate decision names it)")
    rating = found["rating"]
    if found["rated_above"]:
        best = found["rated_above"][0]
        overlap = (
            "their intervals overlap, so the two may be equally strong"
            if best["intervals_overlap"]
            else "their intervals do not overlap: it is likely stronger"
        )
        more = len(found["rated_above"]) - 1
        lines.append(
            f"{best['model_id']} ({best['stage']}) rates {signed(best['difference'])} above it, "
            f"{best['rating']['text']} against {rating['text']}: {overlap}"
            + (f"; {more} more model{'s' if more > 1 else ''} rate above it too" if more else "")
        )
        if found["gate"] != "better":
            lines.append(
                f"production is the newest model that passed the gate, not the highest rated: the {found['gate']} "
                f"gate accepts a candidate that may be up to {found['gate_margin_elo']:.0f} Elo weaker than the model "
                "it replaces, so that selfplay moves to the newest network"
            )
    if predecessor is not None:
        if predecessor["games"]:
            lines.append(
                f"the regression watchdog rolls back to {predecessor['model_id']} once their head-to-head games show "
                f"production more than {predecessor['watchdog_bound_elo']:.0f} Elo weaker at "
                f"{predecessor['watchdog_confidence']:.0%} (at least {predecessor['watchdog_min_games']} games): "
                f"so far {_result(predecessor)} over {predecessor['games']} games, "
                f"Elo {signed(predecessor['elo'])}, upper bound {signed(predecessor['elo_upper'])}"
            )
        else:
            lines.append(
                f"production has not played {predecessor['model_id']}, the model it replaced, yet: "
                "the regression watchdog has nothing to judge"
            )
    if rating["elo"] is not None:
        then = how.get("joint_elo_then")
        moved = (
            f"; it rated {then:.0f} when it was promoted"
            if then is not None and round(then) != round(rating["elo"])
            else ""
        )
        lines.append(
            f"ratings are one joint fit of every match ({found['relative_to']}), refitted whenever a match is "
            f"recorded: {model_id} rates {rating['text']} now, from {float(found['games'] or 0):.0f} games{moved}"
        )
    return lines


def read(app: AppParts, config_key: str) -> dict[str, Any] | None:
    """`standing` of `config_key` in one read of the App's store."""
    with app.store.read() as conn:
        return standing(conn, config_key, app.settings)


def panel_line(found: dict[str, Any] | None) -> str | None:
    """One line for a live panel when a model rates above production (None when none does)."""
    if not found or not found["rated_above"]:
        return None
    best = found["rated_above"][0]
    overlap = "within their intervals" if best["intervals_overlap"] else "beyond their intervals"
    return (
        f"the newest model the gate passed; {best['model_id']} ({best['stage']}) rates "
        f"{signed(best['difference'])} higher, {overlap}"
    )


def rating_note(found: dict[str, Any] | None) -> str | None:
    """What a rating shown at the end of a run rests on, and what it was when the model was promoted."""
    if not found or found["rating"]["elo"] is None:
        return None
    then = found["promotion"].get("joint_elo_then")
    was = f"; {then:.0f} when promoted" if then is not None else ""
    return f"joint fit of {float(found['games'] or 0):.0f} games, refitted with every match recorded{was}"
