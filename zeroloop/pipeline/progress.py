"""The progress record of each pipeline: what status screens show, kept from the event log.

A durable, transactional consumer folds training progress, game batches and promotion
decisions into `pipelines.progress`, so `zeroloop status` and the quickstart read one row
per config key instead of scanning the log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from zeroloop.config import baseline_kind
from zeroloop.events.bus import Event
from zeroloop.events.consumer import ConsumerSpec
from zeroloop.events.wiring import declare
from zeroloop.store.database import Store
from zeroloop.store.queries import artifacts as artifact_queries
from zeroloop.store.queries import jobs as job_queries
from zeroloop.store.queries import pipelines as queries

NAME = "pipeline-progress"
HANDLES = (
    "TRAINING_STARTED",
    "TRAINING_PROGRESS",
    "TRAINING_COMPLETED",
    "GAME_BATCH_READY",
    "MODEL_PROMOTED",
    "MODEL_REJECTED",
    "EVALUATION_RESULT",
    "PIPELINE_PAUSED",
)
declare(NAME, handles=HANDLES)


class ProgressRecorder:
    """Keeps `pipelines.progress` current from the events of each config key."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    def spec(self) -> ConsumerSpec:
        """The durable, transactional consumer that feeds this recorder."""
        return ConsumerSpec(NAME, self.handle, types=HANDLES, transactional=True)

    @staticmethod
    def _finished(conn: Any, event: Event, training: dict[str, Any]) -> dict[str, Any]:
        """The training record of a completed run: the step it reached (from its model's evidence) and loss."""
        payload = event.payload
        artifact = artifact_queries.get_artifact(conn, payload["artifact_sha256"])
        steps = (artifact["meta"] or {}).get("steps") if artifact else None
        return {
            "job_id": payload["job_id"],
            "step": int(steps) if steps is not None else training.get("step", 0),
            "total_steps": training.get("total_steps"),
            "loss": payload["loss"],
            "samples_per_s": training.get("samples_per_s"),
            "finished": True,
            "at": event.created_at,
        }

    def handle(self, event: Event) -> None:
        """Fold one event into its config's progress record."""
        payload = event.payload
        changes: dict[str, Any]
        if event.type == "GAME_BATCH_READY":
            changes = {"last_batch_at": event.created_at, "games_total": payload["games"]}
        elif event.type == "TRAINING_STARTED":
            changes = {"training": {"job_id": payload["job_id"], "step": 0, "loss": None, "at": event.created_at}}
        elif event.type == "TRAINING_PROGRESS":
            changes = {
                "training": {
                    "job_id": payload["job_id"],
                    "step": payload["step"],
                    "total_steps": payload.get("total_steps"),
                    "loss": payload["loss"],
                    "samples_per_s": payload["samples_per_s"],
                    "at": event.created_at,
                }
            }
        elif event.type == "EVALUATION_RESULT":
            # The match's own Elo difference is left out: screens show the model's one rating instead.
            result = {key: payload[key] for key in ("model_id", "wins", "draws", "losses")}
            changes = {f"last_vs_{payload['opponent'] if baseline_kind(payload['opponent']) else 'best'}": result}
        elif event.type == "TRAINING_COMPLETED":
            changes = {}  # filled in below, where the model's artifact can be read
        elif event.type == "MODEL_PROMOTED":
            changes = {
                "promotions": None,
                "last_promotion": {"model_id": payload["model_id"], "reason": payload["reason"]},
            }
        elif event.type == "PIPELINE_PAUSED":
            changes = {"last_pause": {"reason": payload["reason"], "at": event.created_at}}
        else:
            changes = {"last_rejection": {"model_id": payload["model_id"], "reason": payload["reason"]}}
        with self.store.transaction() as conn:
            state = queries.get_pipeline(conn, payload["config_key"])
            before = (state["progress"] or {}) if state else {}
            training = before.get("training") or {}
            late = training.get("job_id") == payload.get("job_id") and training.get("finished")
            if event.type == "TRAINING_PROGRESS" and late:
                return  # a report forwarded after the run completed must not undo "done"
            if event.type == "EVALUATION_RESULT" and _tournament(conn, payload.get("job_id")):
                return  # a tournament pairing is not the last candidate's result; it shows in the ratings
            if event.type == "TRAINING_COMPLETED":
                changes = {"training": self._finished(conn, event, training)}
            if event.type == "MODEL_PROMOTED":
                changes["promotions"] = int(before.get("promotions") or 0) + 1
            if event.type == "GAME_BATCH_READY":
                changes["games_total"] = int(before.get("games_total") or 0) + int(payload["games"])
            queries.merge_progress(conn, payload["config_key"], changes, self.clock())


def _tournament(conn: Any, job_id: int | None) -> bool:
    """Whether a job is a pairing of a scheduled round robin (see zeroloop.pipeline.tournament)."""
    job = job_queries.get_job(conn, int(job_id)) if job_id is not None else None
    return job is not None and (job["payload"] or {}).get("purpose") == "tournament"
