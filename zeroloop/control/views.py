"""What the dashboard, its JSON API, `/metrics` and the CLI show: read functions over one App.

Each function reads the store through the named query catalogue and returns plain data
(dicts, lists, numbers, strings) that serialises to JSON as it is, so the HTML pages, the
`/api/...` endpoints and the Prometheus collector show the same numbers. Nothing here
writes; the admin actions live in `zeroloop.control.actions`. The charts' time series are
read by `zeroloop.control.series`, and why a production model is production by
`zeroloop.control.standing`, in the same way.
"""

from __future__ import annotations

import math
from typing import Any

from zeroloop.alerts import rules as alerts
from zeroloop.cluster.leases import LEADER
from zeroloop.cluster.nodes import LIVE as LIVE_NODES
from zeroloop.cluster.nodes import cost_of
from zeroloop.errors import EventError, ZeroloopError
from zeroloop.events.bus import Event
from zeroloop.events.catalogue import EVENT_TYPES
from zeroloop.events.deadletters import LIVE, DeadLetters
from zeroloop.events.stats import stats as event_stats
from zeroloop.fleet.autoscaler import DURATION_WINDOW_S
from zeroloop.pipeline.distribution import NAME as DISTRIBUTION
from zeroloop.pipeline.ratings import RELATIVE_TO, Rating, ratings
from zeroloop.ports import AppParts
from zeroloop.queue.jobs import JobStatus
from zeroloop.store.queries import daemons as daemon_queries
from zeroloop.store.queries import events as event_queries
from zeroloop.store.queries import fleet as fleet_queries
from zeroloop.store.queries import health as health_queries
from zeroloop.store.queries import job_stats as job_stat_queries
from zeroloop.store.queries import models as model_queries
from zeroloop.store.queries import nodes as node_queries
from zeroloop.store.queries import pipelines as pipeline_queries
from zeroloop.store.queries import series as series_queries

SELFPLAY_RATE_WINDOW_S = 600.0
"""The window over which selfplay games per second are averaged (seconds)."""
_RATE_EVENTS = 2000  # most game batches read for that average


def _finite(value: float | None) -> float | None:
    """`value`, or None when it is missing or not finite (JSON has no infinity)."""
    return value if value is not None and math.isfinite(value) else None


def _rating(rated: Rating) -> dict[str, Any]:
    return {
        "elo": rated.elo,
        "half_width": None if rated.elo is None else _finite(rated.half_width),
        "text": str(rated),
    }


def pipelines(app: AppParts) -> list[dict[str, Any]]:
    """Per config key: stage, round, samples, pause state, training progress, production model and rating, cost.

    Cost is each job's time on its node at the node's price (currency units); Elo is relative to random play.
    """
    with app.store.read() as conn:
        rows = [dict(row) for row in pipeline_queries.list_pipelines(conn)]
        production = {row["config_key"]: model_queries.production_model(conn, row["config_key"]) for row in rows}
        ids = [model["id"] for model in production.values() if model]
        rated = ratings(conn, ids, app.settings.workload.elo_confidence)
        costs = fleet_queries.config_costs(conn)
    found = []
    for row in rows:
        model = production[row["config_key"]]
        progress = row["progress"] or {}
        found.append(
            {
                "config_key": row["config_key"],
                "stage": row["stage"],
                "iteration": row["iteration"],
                "samples_total": row["samples_total"],
                "samples_since_training": row["samples_since_training"],
                "games_total": int(progress.get("games_total") or 0),
                "paused": bool(row["paused"]),
                "pause_reason": row["pause_reason"],
                "training": progress.get("training") or {},
                "last_promotion_at": row.get("last_promotion_at"),
                "model_id": model["id"] if model else None,
                "rating": _rating(rated[model["id"]]) if model else None,
                "cost": costs.get(row["config_key"], 0.0),
            }
        )
    return found


def decisions(app: AppParts, config_key: str | None, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` decisions (with their evidence) of one config key, or of all when None, newest first."""
    with app.store.read() as conn:
        if config_key is not None and pipeline_queries.get_pipeline(conn, config_key) is None:
            raise ZeroloopError(f"no pipeline {config_key!r}: see `zeroloop pipeline ls`")
        keys = [config_key] if config_key else [row["config_key"] for row in pipeline_queries.list_pipelines(conn)]
        rows = [dict(row) for key in keys for row in pipeline_queries.list_decisions(conn, key, limit=limit)]
    rows.sort(key=lambda row: (row["created_at"], row["id"]), reverse=True)
    return rows[:limit]


def fleet_decisions(app: AppParts, limit: int = 20) -> list[dict[str, Any]]:
    """The newest `limit` autoscaler decisions of every pool (config key `fleet:POOL`), newest first, with evidence."""
    with app.store.read() as conn:
        return [dict(row) for row in series_queries.decisions_like(conn, "fleet:", limit=limit)]


def elo_history(app: AppParts, config_key: str) -> list[dict[str, Any]]:
    """Each Elo point of a config key's models, oldest first, with the model's current interval half-width."""
    with app.store.read() as conn:
        points = [dict(row) for row in model_queries.elo_history_of(conn, config_key)]
        rated = ratings(conn, {point["model_id"] for point in points}, app.settings.workload.elo_confidence)
    return [
        {
            "model_id": point["model_id"],
            "elo": float(point["elo"]),
            "half_width": _finite(rated[point["model_id"]].half_width) if rated[point["model_id"]].rated else None,
            "at": float(point["created_at"]),
        }
        for point in points
    ]


def pipeline(app: AppParts, config_key: str, *, decision_limit: int = 20) -> dict[str, Any]:
    """One pipeline: its row (as in `pipelines`), its Elo history and its newest decisions."""
    found = next((row for row in pipelines(app) if row["config_key"] == config_key), None)
    if found is None:
        raise ZeroloopError(f"no pipeline {config_key!r}: see `zeroloop pipeline ls`")
    return {
        **found,
        "elo_relative_to": RELATIVE_TO,
        "elo_history": elo_history(app, config_key),
        "decisions": decisions(app, config_key, decision_limit),
    }


def newest_tune(app: AppParts, config_key: str) -> dict[str, Any] | None:
    """The newest tune of a config key, as the pipeline's page links it: id, status, variants (None: never tuned)."""
    from zeroloop.store.queries import tunes as tune_queries

    with app.store.read() as conn:
        found = tune_queries.list_tunes(conn, config_key=config_key)
    return {name: found[0][name] for name in ("id", "status", "variants")} if found else None


def population(app: AppParts, config_key: str) -> dict[str, Any]:
    """The newest tune of a config key: its state, every trial, and each variant's Elo against its CPU-seconds.

    `series` maps each variant to its points [CPU-seconds, Elo] (the population's joint
    rating, random play = 0), one per change, as the tune daemon recorded them.
    """
    from zeroloop.store.queries import tunes as tune_queries

    with app.store.read() as conn:
        found = tune_queries.list_tunes(conn, config_key=config_key)
        if not found:
            raise ZeroloopError(f"{config_key} has no tune: start one with zeroloop tune start {config_key}")
        tune = found[0]
        trials = [dict(row) for row in tune_queries.trials_of(conn, int(tune["id"]))]
    progress = dict(tune["progress"] or {})
    keep = ("id", "config_key", "status", "sampler", "variants", "reason", "created_at", "finished_at", "adopted_at")
    return {
        **{name: tune[name] for name in keep},
        "budget": {"cpu_s": tune["budget_cpu_s"], "gpu_s": tune["budget_gpu_s"]},
        "spent": {"cpu_s": tune["spent_cpu_s"], "gpu_s": tune["spent_gpu_s"]},
        "elo_relative_to": RELATIVE_TO,
        "series": progress.get("series") or {},
        "last_error": progress.get("last_error"),
        "trials": trials,
    }


def models(app: AppParts, config_key: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Models newest first with stage, rating, parent (their lineage) and times (epoch seconds)."""
    found = app.models.list_models(config_key, limit=limit)
    with app.store.read() as conn:
        rated = ratings(conn, [model.id for model in found], app.settings.workload.elo_confidence)
    return [
        {
            "id": model.id,
            "config_key": model.config_key,
            "stage": str(model.stage),
            "parent_id": model.parent_id,
            "rating": _rating(rated[model.id]),
            "created_at": model.created_at,
            "promoted_at": model.promoted_at,
        }
        for model in found
    ]


def lineage(models_found: list[dict[str, Any]], model_id: str) -> list[str]:
    """The chain of parents from `model_id` back to the first model among `models_found` (ids, newest first)."""
    parents = {model["id"]: model["parent_id"] for model in models_found}
    chain = [model_id]
    while parents.get(chain[-1]) and parents[chain[-1]] not in chain:
        chain.append(parents[chain[-1]])
    return chain


def queue(app: AppParts, dead_limit: int = 50) -> dict[str, Any]:
    """Jobs by type then status, dead jobs, live dead letters, lifetime counters, and each type's backpressure level.

    The level is the one producers last recorded: reading it writes nothing and does not mix in this
    process's own memory and disk, which say nothing about the fleet.
    """
    counts = app.queue.stats()
    backpressure = {job_type: app.queue.backpressure.recorded(job_type).name for job_type in counts}
    dead = app.queue.list(statuses=[JobStatus.DEAD], limit=dead_limit)
    letters = DeadLetters(app.store).list(statuses=LIVE, limit=dead_limit)
    with app.store.read() as conn:
        lifetime = [dict(row) for row in job_stat_queries.all_stats(conn)]
    return {
        "counts": counts,
        "statuses": [status.value for status in JobStatus],
        "backpressure": backpressure,
        "dead_jobs": [
            {
                "id": job.id,
                "type": job.type,
                "config_key": job.config_key,
                "attempts": job.attempts,
                "error": job.error,
                "updated_at": job.updated_at,
            }
            for job in dead
        ],
        "dead_letters": [
            {
                "id": letter.id,
                "event_id": letter.event_id,
                "consumer": letter.consumer,
                "status": str(letter.status),
                "attempts": letter.attempts,
                "error": (letter.error or "").splitlines()[0] if letter.error else "",
            }
            for letter in letters
        ],
        "lifetime": lifetime,
    }


ENDED_NODES = frozenset({"terminated", "failed"})  # gone for good: out of the default views and the metrics


def nodes(app: AppParts, *, ended: bool = False) -> list[dict[str, Any]]:
    """The nodes with status, provider, pool, resources, the utilisation of its last heartbeat (%), cost, and
    the delivery ledger: `holds`, config key -> the production model (id) its cache holds, as its
    `model_distribution` daemon last reported.

    Nodes that ended (terminated, failed) only with `ended`; utilisation only of nodes that heartbeat
    now (a lost or ended node's last reading is history, not load)."""
    now = app.clock()
    live = {status.value for status in LIVE_NODES}
    with app.store.read() as conn:
        ledger = {
            row["node"]: dict(((row["health"] or {}).get("details") or {}).get("holds") or {})
            for row in daemon_queries.list_daemons(conn)
            if row["name"] == DISTRIBUTION
        }
        named = model_queries.ids_of_artifacts(conn, [sha for held in ledger.values() for sha in held.values()])
    found = []
    for row in app.nodes.list_nodes():
        if row["status"] in ENDED_NODES and not ended:
            continue
        found.append(
            {
                "id": row["id"],
                "status": row["status"],
                "provider": row["provider"],
                "pool": row["pool"],
                "slots": row["slots"],
                "cpu_count": row["cpu_count"],
                "memory_bytes": row["memory_bytes"],
                "gpus": len(row["gpus"] or []),
                "utilisation": (row["utilisation"] or {}) if row["status"] in live else {},
                "heartbeat_at": row["heartbeat_at"],
                "cost_per_hour": row["cost_per_hour"],
                "billed": row["billing_since"] is not None,
                "cost": cost_of(row, now),
                "holds": {key: named.get(sha, sha[:12]) for key, sha in sorted(ledger.get(row["id"], {}).items())},
            }
        )
    return found


def daemons(app: AppParts, *, ended: bool = False) -> list[dict[str, Any]]:
    """The daemons of the nodes: state, health, restarts, last error, last update (epoch seconds).

    Daemons of nodes that ended (terminated, failed) only with `ended`, marked `node_ended`: a
    restarted quickstart's old node leaves its rows behind, and they are history, not state."""
    with app.store.read() as conn:
        rows = daemon_queries.list_daemons(conn)
        gone = {row["id"] for row in node_queries.list_nodes(conn, tuple(ENDED_NODES))}
    return [
        {
            "node": row["node"],
            "name": row["name"],
            "state": row["state"],
            "health": (row["health"] or {}).get("state"),
            "restarts": row["restarts"],
            "last_error": row["last_error"] or (row["health"] or {}).get("reason"),
            "updated_at": row["updated_at"],
            "node_ended": row["node"] in gone,
        }
        for row in rows
        if ended or row["node"] not in gone
    ]


def health(app: AppParts) -> dict[str, Any]:
    """The health score (0..1), its level, components and the issues that explain it, and the leader."""
    report = app.health.assess()
    leader = app.leases.get(LEADER)
    return {
        "score": report.score,
        "level": report.level.value,
        "components": report.components,
        "issues": report.issues,
        "paused": report.paused,
        "leader": None
        if leader is None or leader.holder is None
        else {"node": leader.holder, "token": leader.token, "state": leader.state, "expires_at": leader.expires_at},
    }


def work(app: AppParts) -> dict[str, Any]:
    """Jobs by status, and per job type the queued and running jobs and the seconds of queued work.

    The seconds of work come from the mean run time of the type's jobs of the last
    `DURATION_WINDOW_S`, spread over the slots of the live nodes (None when unknown).
    """
    with app.store.read() as conn:
        counts = health_queries.job_counts(conn)
        durations = fleet_queries.mean_durations(conn, app.clock() - DURATION_WINDOW_S)
        live = node_queries.list_nodes(conn, tuple(status.value for status in LIVE_NODES))
    slots = sum(row["slots"] or 1 for row in live)
    by_status: dict[str, int] = {}
    for (_job_type, status), count in counts.items():
        by_status[status] = by_status.get(status, 0) + count
    by_type = {}
    for job_type in sorted({job_type for job_type, _status in counts}):
        queued = counts.get((job_type, "queued"), 0)
        seconds = queued * durations[job_type] / slots if queued and job_type in durations and slots else None
        by_type[job_type] = {"queued": queued, "running": counts.get((job_type, "running"), 0), "work_s": seconds}
    return {"by_status": by_status, "by_type": by_type, "slots": slots}


def pools(app: AppParts) -> list[dict[str, Any]]:
    """Each provider pool: kind, profile, bounds, its nodes by status, cost so far, the autoscaler's last decision."""
    costs = app.fleet.costs()
    found = []
    with app.store.read() as conn:
        for name, provider in app.fleet.providers.items():
            counts: dict[str, int] = {}
            for row in node_queries.pool_nodes(conn, name):
                counts[row["status"]] = counts.get(row["status"], 0) + 1
            decisions = pipeline_queries.list_decisions(conn, f"fleet:{name}", limit=1)
            last = None
            if decisions:
                last = {"outcome": decisions[0]["outcome"], "reason": decisions[0]["evidence"].get("reason", "")}
            pool = provider.pool
            found.append(
                {
                    "pool": name,
                    "kind": provider.kind,
                    "profile": pool.profile,
                    "nodes": counts,
                    "min_nodes": pool.min_nodes,
                    "max_nodes": pool.max_nodes,
                    "cost": costs.get(name, 0.0),
                    "last_decision": last,
                }
            )
    return found


def _event(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "type": event.type,
        "config_key": event.config_key,
        "node": event.node,
        "source": event.source,
        "created_at": event.created_at,
        "payload": event.payload,
    }


def events(
    app: AppParts, *, types: list[str] | None = None, config_key: str | None = None, limit: int = 100
) -> list[Any]:
    """The newest `limit` events, newest first, optionally of the given types and one config key."""
    unknown = [name for name in types or [] if name not in EVENT_TYPES]
    if unknown:
        raise EventError(f"unknown event type {', '.join(map(repr, unknown))}: see `zeroloop events tail --help`")
    with app.store.read() as conn:
        rows = event_queries.latest(
            conn, types=types or (), config_keys=[config_key] if config_key else None, limit=limit
        )
    return [_event(Event.from_row(row)) for row in reversed(rows)]


def recent_alerts(app: AppParts, limit: int = 20) -> list[dict[str, Any]]:
    """The newest operational alerts (the events the alerts consumer reports), newest first, with their summary."""
    with app.store.read() as conn:
        rows = event_queries.latest(conn, types=alerts.HANDLES, limit=limit)
    found = []
    for row in reversed(rows):
        event = Event.from_row(row)
        if alerts.is_alert(event):
            found.append({**_event(event), "summary": alerts.summary(event), "rule": alerts.rule_of(event)})
    return found


def selfplay_games_per_s(app: AppParts, window_s: float = SELFPLAY_RATE_WINDOW_S) -> dict[str, float]:
    """Selfplay games per second per config key, averaged over the last `window_s` seconds of game batches."""
    since = app.clock() - window_s
    with app.store.read() as conn:
        rows = event_queries.latest(conn, types=("GAME_BATCH_READY",), limit=_RATE_EVENTS)
    games: dict[str, float] = {}
    for row in rows:
        if float(row["created_at"]) >= since:
            key = str(row["config_key"])
            games[key] = games.get(key, 0.0) + float(row["payload"]["games"])
    return {key: total / window_s for key, total in games.items()}


def fleet_cost_per_hour(app: AppParts) -> float:
    """What every billed node costs together now (currency units per hour)."""
    with app.store.read() as conn:
        rows = node_queries.list_nodes(conn)
    return float(sum(row["cost_per_hour"] or 0.0 for row in rows if row["billing_since"] is not None))


def consumer_lag(app: AppParts) -> dict[str, int]:
    """Each durable consumer's lag (events after its cursor that match its filter)."""
    return {item.name: item.lag for item in event_stats(app.store).consumers}


def overview(app: AppParts) -> dict[str, Any]:
    """The front page: health, pipelines, job counts by status, node counts by status, recent alerts."""
    by_status: dict[str, int] = {}
    for counts in app.queue.stats().values():
        for status, count in counts.items():
            by_status[status] = by_status.get(status, 0) + count
    node_counts: dict[str, int] = {}
    for node in nodes(app):
        node_counts[node["status"]] = node_counts.get(node["status"], 0) + 1
    return {
        "health": health(app),
        "pipelines": pipelines(app),
        "jobs": by_status,
        "work": work(app),
        "nodes": node_counts,
        "cost_per_hour": fleet_cost_per_hour(app),
        "alerts": recent_alerts(app, limit=10),
    }
