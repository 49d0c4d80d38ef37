"""A distilled network joins the registry and is rated like any model (the `tune_distill` consumer, on the leader).

On DISTILLATION_COMPLETED the student is registered under its teacher's config key (a
candidate, with its teacher as parent and `distilled` in its meta: its size and its
teacher's in parameters), and its rating matches are enqueued: against its teacher
(`tune.distill_games` games) and against every baseline (`pipeline.baseline_games`), as
`tournament` evaluate jobs, so the coordinator records them in the config key's joint
rating and no round waits for them. A `distill`/`completed` decision records it. A team
can then deploy the smallest network within the Elo it accepts of the best
(`zeroloop models ls` shows both ratings; `zeroloop models promote` deploys one).

The student never becomes a round's candidate: its meta's `iteration` is -1, which no
round has, so the coordinator's promotion never judges it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Literal

from zeroloop.config import Settings
from zeroloop.events.bus import Event
from zeroloop.events.consumer import ConsumerSpec
from zeroloop.events.wiring import declare
from zeroloop.pipeline import jobs
from zeroloop.pipeline.registry import ModelRegistry
from zeroloop.queue.manager import JobQueue
from zeroloop.store.database import Store
from zeroloop.store.queries import models as model_queries
from zeroloop.store.queries import pipelines as pipeline_queries

NAME = "tune_distill"
HANDLES = ("DISTILLATION_COMPLETED",)
declare(NAME, handles=HANDLES)

RATING_PRIORITY = 40  # as tournaments


class DistillRecorder:
    """Registers distilled networks and enqueues the matches that rate them (run it on the leader only)."""

    def __init__(
        self,
        store: Store,
        queue: JobQueue,
        registry: ModelRegistry,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.queue = queue
        self.models = registry
        self.settings = settings
        self.clock = clock

    def spec(self) -> ConsumerSpec:
        """The durable, transactional consumer of finished distillations."""
        return ConsumerSpec(NAME, self.handle, types=HANDLES, transactional=True)

    def handle(self, event: Event) -> None:
        """Register the student and enqueue its rating matches (idempotent: a replay changes nothing)."""
        payload = event.payload
        config_key = payload["config_key"]
        loss = float(payload["loss"]) if math.isfinite(float(payload["loss"])) else None  # JSONB keeps no NaN
        job = self.queue.get(int(payload["job_id"]))
        distill = jobs.DistillJob.model_validate(job.payload)
        with self.store.transaction() as conn:
            if model_queries.get_model(conn, payload["model_id"]) is not None:
                return  # a replay: registered, rated and recorded already
            teacher = model_queries.get_model(conn, distill.teacher_id)
            student = self.models.register_candidate(
                config_key=config_key,
                artifact_sha256=payload["artifact_sha256"],
                parent_id=distill.teacher_id if teacher is not None else None,
                window_sha256=distill.window_sha256,
                job_ids=[job.id],
                iteration=distill.iteration,
                meta={
                    "iteration": -1,  # no round's: the coordinator never judges it for production
                    "loss": loss,
                    "distilled": {
                        "teacher": distill.teacher_id,
                        "blocks": distill.blocks,
                        "channels": distill.channels,
                        "parameters": payload["parameters"],
                        "teacher_parameters": payload["teacher_parameters"],
                        "steps": distill.steps,
                    },
                },
            )
            opponents: list[tuple[str, Literal["model", "random", "mcts", "mctsbot"], str | None, int]] = []
            if teacher is not None:
                opponents.append((teacher["id"], "model", teacher["artifact_sha256"], self.settings.tune.distill_games))
            games = self.settings.pipeline.for_key(config_key).baseline_games
            opponents += [(b, jobs.baseline_opponent(b), None, games) for b in self.settings.pipeline.baselines]
            for opponent, kind, sha, games in opponents:
                evaluate = jobs.EvaluateJob(
                    iteration=distill.iteration,
                    model_id=student.id,
                    model_sha256=student.artifact_sha256,
                    opponent=opponent,
                    opponent_kind=kind,
                    opponent_sha256=sha,
                    games=games,
                    purpose="tournament",
                )
                self.queue.enqueue(
                    jobs.EVALUATE,
                    config_key,
                    evaluate.model_dump(),
                    priority=RATING_PRIORITY,
                    idempotency_key=f"{student.id}:rate:{opponent}",
                )
            size = f"{payload['parameters']:,} parameters against the teacher's {payload['teacher_parameters']:,}"
            pipeline_queries.insert_decision(
                conn,
                config_key=config_key,
                kind="distill",
                outcome="completed",
                evidence={
                    "model_id": student.id,
                    "teacher": distill.teacher_id,
                    "job_id": job.id,
                    "loss": loss,
                    "parameters": payload["parameters"],
                    "teacher_parameters": payload["teacher_parameters"],
                    "rating_matches": [name for name, _k, _s, _g in opponents],
                    "reason": f"{student.id}: {size}; rated against {', '.join(o[0] for o in opponents)}",
                },
                now=self.clock(),
            )
