"""A store with something to look at: a pipeline with two promoted models and a decision, a node with a daemon,
a dead job, a dead letter."""

from __future__ import annotations

from dataclasses import dataclass

from zeroloop.app import App
from zeroloop.cluster.nodes import NodeInfo
from zeroloop.store.queries import daemons as daemon_queries
from zeroloop.store.queries import dead_letters as letter_queries
from zeroloop.store.queries import pipelines as pipeline_queries

KEY = "tic_tac_toe_2p"
NODE = "gpu-node-7"
DEAD_ERROR = "out of memory on purpose"
LETTER_ERROR = "webhook down on purpose"
DECISION_REASON = "lower bound 0.58 of the win rate clears 0.55"
DAEMON_ERROR = "RuntimeError: crashed on purpose"


@dataclass(frozen=True)
class Observed:
    """The ids of what `populate` made."""

    first_model: str
    second_model: str
    dead_job: int
    letter: int
    loss: float = 0.731


def populate(app: App) -> Observed:
    """Fill `app`'s store with one of each thing the dashboard shows."""
    now = app.clock()
    with app.store.transaction() as conn:
        pipeline_queries.ensure_pipeline(conn, KEY, now)
        pipeline_queries.add_samples(conn, KEY, 5000, now)
        training = {"job_id": 1, "step": 200, "loss": Observed.loss, "samples_per_s": 1234.0, "at": now}
        pipeline_queries.merge_progress(conn, KEY, {"training": training, "games_total": 321}, now)
    first = app.models.register_candidate(
        config_key=KEY, artifact_sha256="a" * 64, parent_id=None, window_sha256=None, job_ids=[], iteration=1
    )
    app.models.record_match(
        config_key=KEY, model_id=first.id, opponent="random", wins=16, draws=2, losses=2,
        elo_diff=300.0, elo_ci=90.0, job_id=None,
    )  # fmt: skip
    app.models.promote(first.id, reason="policy")
    second = app.models.register_candidate(
        config_key=KEY, artifact_sha256="b" * 64, parent_id=first.id, window_sha256=None, job_ids=[], iteration=2
    )
    app.models.record_match(
        config_key=KEY, model_id=second.id, opponent=first.id, wins=12, draws=4, losses=4,
        elo_diff=120.0, elo_ci=80.0, job_id=None,
    )  # fmt: skip
    app.models.promote(second.id, reason="policy")
    app.nodes.register(
        NodeInfo(
            id=NODE, host="h7", provider="local", cpu_count=8, memory_bytes=16 * 2**30, disk_bytes=2**40,
            cost_per_hour=1.5,
        ),
        utilisation={"cpu_pct": 42.0, "memory_pct": 55.0, "disk_pct": 12.0, "gpu_pct": None},
    )  # fmt: skip
    job = app.queue.enqueue("train", KEY, {}, max_attempts=1)
    lease = app.queue.claim(NODE)
    assert lease is not None and lease.job.id == job.id
    app.queue.fail(job.id, lease.token, DEAD_ERROR, retryable=False)
    event_id = app.bus.publish("PIPELINE_PAUSED", {"config_key": KEY, "reason": "system health"})
    with app.store.transaction() as conn:
        letter = letter_queries.insert_dead_letter(
            conn, event_id=event_id, consumer="alerts", status="pending", attempts=5, error=LETTER_ERROR,
            traceback="", now=now, next_retry_at=now + 600,
        )  # fmt: skip
        pipeline_queries.insert_decision(
            conn, config_key=KEY, kind="promotion", outcome="promoted", now=now,
            evidence={"model_id": second.id, "reason": DECISION_REASON, "wins": 12, "draws": 4, "losses": 4},
        )  # fmt: skip
        daemon_queries.upsert_daemon(
            conn,
            {
                "node": NODE, "name": "job_executor", "state": "backoff", "restarts": 3, "last_error": DAEMON_ERROR,
                "health": {"state": "unhealthy"}, "started_at": now, "updated_at": now,
            },
        )  # fmt: skip
    return Observed(first.id, second.id, job.id, letter)
