"""The pipeline coordinator: turns workers' results into the next stage's jobs.

It is one durable, transactional consumer (`pipeline`) run by the leader: each event is
handled in the transaction that also moves its cursor, so the state change, the jobs
it enqueues and the events it publishes commit together, exactly once. Every handler
first checks that the event still fits the pipeline's stage and iteration, so a
replayed or late event changes nothing.

    SELFPLAY_COMPLETE   count the samples; GAME_BATCH_READY; export once enough are new
    NPZ_EXPORT_COMPLETE train a candidate on the window, from the production model, for the
                        steps the round's new samples call for (`train_samples_per_sample`)
    TRAINING_COMPLETED  register the candidate; evaluate it against the best and baselines,
                        or, with `evaluation.gate = "none"`, promote it at once
    EVALUATION_RESULT   record the match; let the regression watchdog judge production
                        against its predecessor; when every match is in, promote or reject
    JOB_DEAD            a dead export/train/evaluate job ends the round: back to selfplay
    PIPELINE_RESUMED    check the export trigger again

A round is not started while the circuit breaker of any of its stages (export, train,
evaluate) is open: the coordinator records a `breaker`/`held` decision naming them
(once per round and set of stages) and starts the round at a later trigger, once the
circuits let trials through again. A round already under way goes on; its failing jobs
end it through their retries and JOB_DEAD.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from zeroloop.cluster.breakers import CircuitBreakers, stage_key
from zeroloop.config import PipelineSettings, Settings, baseline_kind, baseline_order
from zeroloop.events.bus import Event, EventBus
from zeroloop.events.consumer import ConsumerSpec
from zeroloop.events.wiring import declare
from zeroloop.pipeline import jobs, promotion, quality
from zeroloop.pipeline.registry import Guard, ModelRegistry, ModelStage
from zeroloop.pipeline.stages import Stage, transition
from zeroloop.pipeline.watchdog import RegressionWatchdog
from zeroloop.queue.manager import JobQueue
from zeroloop.store.database import Store
from zeroloop.store.queries import artifacts as artifact_queries
from zeroloop.store.queries import models as model_queries
from zeroloop.store.queries import pipelines as queries
from zeroloop.store.queries import quarantine as quarantine_queries
from zeroloop.workload.keys import base_key

log = logging.getLogger(__name__)

NAME = "pipeline"
HANDLES = (
    "SELFPLAY_COMPLETE",
    "NPZ_EXPORT_COMPLETE",
    "TRAINING_COMPLETED",
    "EVALUATION_RESULT",
    "JOB_DEAD",
    "PIPELINE_RESUMED",
)
declare(NAME, emits=("GAME_BATCH_READY",), handles=HANDLES)


ROUND_JOBS = (jobs.EXPORT, jobs.TRAIN, jobs.EVALUATE)


def window_size(samples_total: int, settings: PipelineSettings) -> int:
    """Samples in the next training window after `samples_total` samples were played (KataGo's power-law taper).

    Every sample up to `window_min_samples` (c); beyond, c * (1 + beta * ((n / c)^alpha - 1) / alpha),
    which grows like n^alpha, so old data leaves the window as the loop improves while
    the window still grows; never more than `window_samples`.
    """
    c = settings.window_min_samples
    n = max(samples_total, 1)
    if n <= c:
        grown = float(c)
    else:
        alpha, beta = settings.window_growth, settings.window_taper
        grown = c * (1.0 + beta * ((n / c) ** alpha - 1.0) / alpha)
    return max(1, min(settings.window_samples, round(grown)))


class PipelineCoordinator:
    """Handles the pipeline's events for every config key (run it on the leader only)."""

    def __init__(
        self,
        store: Store,
        bus: EventBus,
        queue: JobQueue,
        registry: ModelRegistry,
        settings: Settings,
        *,
        fence: Guard | None = None,
        clock: Callable[[], float] = time.time,
        breakers: CircuitBreakers | None = None,
    ) -> None:
        """`fence` checks, inside the promotion's transaction, that this process still leads.

        `breakers` (the stage circuit breakers) are consulted before a round starts.
        """
        self.store = store
        self.bus = bus
        self.queue = queue
        self.models = registry
        self.settings = settings.pipeline  # .for_key(K): as config key K sees it
        self.evaluation = settings.evaluation
        self.workload = settings.workload
        self.fence = fence
        self.clock = clock
        self.breakers = breakers
        self.watchdog = RegressionWatchdog(registry, settings.evaluation, fence=fence, clock=clock)

    def spec(self) -> ConsumerSpec:
        """The durable, transactional consumer that feeds this coordinator."""
        return ConsumerSpec(NAME, self.handle, types=HANDLES, transactional=True)

    def handle(self, event: Event) -> None:
        """Apply one event (called inside the consumer's transaction)."""
        handler = getattr(self, f"_on_{event.type.lower()}")
        with self.store.transaction():
            handler(event)

    # --- selfplay and export ---------------------------------------------------------------

    def _on_selfplay_complete(self, event: Event) -> None:
        payload = event.payload
        config_key = payload["config_key"]
        with self.store.transaction() as conn:
            queries.ensure_pipeline(conn, config_key, self.clock())
            queries.add_samples(conn, config_key, int(payload["samples"]), self.clock())
        self.bus.publish(
            "GAME_BATCH_READY",
            {
                "config_key": config_key,
                "artifact_sha256": payload["artifact_sha256"],
                "games": payload["games"],
                "samples": payload["samples"],
            },
            dedup_key=f"batch:{payload['artifact_sha256']}",
            causation=event,
        )
        self.maybe_export(config_key)

    def _on_pipeline_resumed(self, event: Event) -> None:
        self.maybe_export(event.payload["config_key"])

    def maybe_export(self, config_key: str) -> None:
        """Start a round (an export job) if the pipeline is idle, not paused, and has enough new samples."""
        with self.store.transaction() as conn:
            state = queries.get_pipeline(conn, config_key, for_update=True)
            if state is None or state["paused"] or state["stage"] != Stage.SELFPLAY:
                return
            pipeline = self.settings.for_key(config_key)
            if state["samples_since_training"] < pipeline.train_after_samples:
                return
            window = window_size(int(state["samples_total"]), pipeline)
            inputs = self._window_inputs(conn, config_key, window, quality.excluded_batches(state["progress"]))
            if not inputs:
                return
            iteration = int(state["iteration"])
            held = self._open_stages()
            if held:
                self._hold(conn, config_key, iteration, held)
                return
            new_samples = int(state["samples_since_training"])
            job = jobs.ExportJob(iteration=iteration, inputs=inputs, window_samples=window, new_samples=new_samples)
            self.queue.enqueue(
                jobs.EXPORT,
                config_key,
                job.model_dump(),
                priority=50,
                idempotency_key=f"{config_key}:export:{iteration}",
            )
            queries.update_pipeline(
                conn,
                config_key,
                self.clock(),
                stage=transition(state["stage"], Stage.EXPORT).value,
                samples_since_training=0,
            )
            log.info("%s: round %d starts, exporting a window of %d batches", config_key, iteration, len(inputs))

    def _open_stages(self) -> list[str]:
        """The stages of a round whose circuit breaker refuses work now."""
        if self.breakers is None:
            return []
        return [stage for stage in ROUND_JOBS if not self.breakers.allow(stage_key(stage))]

    def _hold(self, conn: Any, config_key: str, iteration: int, held: list[str]) -> None:
        """Record that round `iteration` waits for open circuits (unless the newest decision already says so)."""
        evidence = {
            "iteration": iteration,
            "stages": held,
            "reason": f"circuit breaker open for {', '.join(held)}: the round starts once it lets trials through",
        }
        last = queries.list_decisions(conn, config_key, limit=1)
        if last and last[0]["kind"] == "breaker" and last[0]["evidence"] == evidence:
            return
        queries.insert_decision(
            conn, config_key=config_key, kind="breaker", outcome="held", evidence=evidence, now=self.clock()
        )
        log.warning("%s: round %d held back: %s", config_key, iteration, evidence["reason"])

    def _window_inputs(self, conn: Any, config_key: str, window: int, excluded: set[str]) -> list[str]:
        """The newest game batches that together hold `window` samples, oldest first.

        Only accepted outputs (`window_batches`): a deposed lease holder's late batch is never
        trained on, so no job's games count twice; garbage collection deletes it. Left out too:
        the batches the quality monitor flagged (its decision names each and why) and those of a
        quarantined node (`zeroloop nodes quarantine`).
        """
        chosen: list[str] = []
        total = 0
        batches = list(artifact_queries.window_batches(conn, config_key))
        quarantined = quarantine_queries.quarantined_artifacts(conn, [row["sha256"] for row in batches])
        for row in batches:
            if row["sha256"] in excluded or row["sha256"] in quarantined:
                continue
            chosen.append(row["sha256"])
            total += int(row["meta"].get("samples", 0))
            if total >= window:
                break
        return list(reversed(chosen))

    # --- training ----------------------------------------------------------------------------

    def _on_npz_export_complete(self, event: Event) -> None:
        job = self.queue.get(int(event.payload["job_id"]))
        export = jobs.ExportJob.model_validate(job.payload)
        with self.store.transaction() as conn:
            state = self._state_at(conn, job.config_key, Stage.EXPORT, export.iteration)
            if state is None:
                return
            production = model_queries.production_model(conn, job.config_key)
            train = jobs.TrainJob(
                iteration=export.iteration,
                window_sha256=event.payload["window_sha256"],
                init_model_id=production["id"] if production else None,
                init_model_sha256=production["artifact_sha256"] if production else None,
                rows=self.train_rows(job.config_key, export.new_samples),
            )
            self.queue.enqueue(
                jobs.TRAIN,
                job.config_key,
                train.model_dump(),
                priority=60,
                requires={"gpus": 0},
                idempotency_key=f"{job.config_key}:train:{export.iteration}",
            )
            queries.update_pipeline(
                conn, job.config_key, self.clock(), stage=transition(Stage.EXPORT, Stage.TRAINING).value
            )

    def train_rows(self, config_key: str, new_samples: int) -> int | None:
        """Training rows for a round of `config_key` that brought `new_samples`: ceil(ratio x new samples).

        The workload turns them into steps with its own batch size. None (the workload's own
        `train_steps`) when `train_samples_per_sample` is 0 or the round counted no new samples
        (an export job from before the count was kept).
        """
        ratio = self.settings.for_key(config_key).train_samples_per_sample
        if ratio <= 0 or new_samples <= 0:
            return None
        return max(1, math.ceil(ratio * new_samples))

    # --- evaluation ----------------------------------------------------------------------------

    def _on_training_completed(self, event: Event) -> None:
        payload = event.payload
        job = self.queue.get(int(payload["job_id"]))
        train = jobs.TrainJob.model_validate(job.payload)
        with self.store.transaction() as conn:
            if self._state_at(conn, job.config_key, Stage.TRAINING, train.iteration) is None:
                return
            production = model_queries.production_model(conn, job.config_key)
            pipeline = self.settings.for_key(job.config_key)
            ungated = self.evaluation.for_key(job.config_key).gate == "none"
            opponents = [] if ungated else ([production["id"]] if production else []) + list(pipeline.baselines)
            model = self.models.register_candidate(
                config_key=job.config_key,
                artifact_sha256=payload["artifact_sha256"],
                parent_id=train.init_model_id,
                window_sha256=train.window_sha256,
                job_ids=[job.id],
                iteration=train.iteration,
                meta={"opponents": opponents, "loss": payload["loss"], "samples": payload["samples"]},
            )
            for opponent in opponents:
                is_model = production is not None and opponent == production["id"]
                evaluate = jobs.EvaluateJob(
                    iteration=train.iteration,
                    model_id=model.id,
                    model_sha256=model.artifact_sha256,
                    opponent=opponent,
                    opponent_kind="model" if is_model else opponent,
                    opponent_sha256=production["artifact_sha256"] if is_model and production else None,
                    games=pipeline.eval_games if is_model else pipeline.baseline_games,
                    seed=train.iteration,
                )
                self.queue.enqueue(
                    jobs.EVALUATE,
                    job.config_key,
                    evaluate.model_dump(),
                    priority=70,
                    idempotency_key=f"{model.id}:eval:{opponent}",
                )
            queries.update_pipeline(
                conn, job.config_key, self.clock(), stage=transition(Stage.TRAINING, Stage.EVALUATION).value
            )
            if ungated:  # no match to wait for: the policy decides now
                self._maybe_decide(job.config_key, model.id)

    def _on_evaluation_result(self, event: Event) -> None:
        payload = event.payload
        config_key = payload["config_key"]
        self.models.record_match(
            config_key=config_key,
            model_id=payload["model_id"],
            opponent=payload["opponent"],
            wins=payload["wins"],
            draws=payload["draws"],
            losses=payload["losses"],
            elo_diff=payload["elo_diff"],
            elo_ci=payload["elo_ci"],
            job_id=payload["job_id"],
        )
        with self.store.transaction() as conn:
            self.watchdog.check(conn, config_key)
        self._maybe_decide(config_key, payload["model_id"])

    def _maybe_decide(self, config_key: str, model_id: str) -> None:
        with self.store.transaction() as conn:
            model = self.models.get(model_id)
            iteration = int(model.meta.get("iteration", -1))
            state = self._state_at(conn, config_key, Stage.EVALUATION, iteration)
            if state is None or model.stage is not ModelStage.CANDIDATE:
                return
            results = self._results(model_id)
            opponents: list[str] = list(model.meta.get("opponents", []))
            if any(opponent not in results for opponent in opponents):
                return
            production = model_queries.production_model(conn, config_key)
            best_id = production["id"] if production else None
            pipeline = self.settings.for_key(config_key)
            played = next((name for name in opponents if baseline_kind(name) is None), None)
            if opponents and played != best_id:
                # Production changed while the candidate played (a rollback, a promotion by hand):
                # its results are against a model that no longer sets the bar.
                self._judged(
                    conn,
                    config_key,
                    model_id,
                    promotion.Decision(
                        False, "production changed while it was evaluated: the next round is judged against the new one"
                    ),
                    {"evaluated_against": played, "production": best_id},
                )
                return
            evidence = promotion.Evidence(
                vs_best=results.get(best_id) if best_id else None,
                vs_baselines={name: results[name] for name in pipeline.baselines if name in results},
                best_vs_baselines={
                    name: result
                    for name, result in (self._results(best_id) if best_id else {}).items()
                    if name in pipeline.baselines
                },
                last_promotion_at=state["last_promotion_at"],
                now=self.clock(),
            )
            mcts = self.workload.baseline_simulations  # the workload's own baseline, as this key (or variant) sets it
            for key in dict.fromkeys((base_key(config_key), config_key)):
                mcts = int(self.workload.overrides.get(key, {}).get("baseline_simulations", mcts))
            order = baseline_order(pipeline.baselines, mcts)
            decision = promotion.decide(pipeline, evidence, order, self.evaluation.for_key(config_key))
            joint = {name: self._joint_elo(conn, name) for name in (model_id, best_id) if name is not None}
            self._judged(conn, config_key, model_id, decision, {**evidence.as_dict(), "joint_elo": joint})

    @staticmethod
    def _joint_elo(conn: Any, model_id: str) -> float | None:
        """A model's stored joint rating (Elo), for the decision's evidence; None while it is not rated."""
        row = model_queries.get_model(conn, model_id)
        rating = (row["meta"] or {}).get("rating") if row else None
        return float(rating["elo"]) if rating else None

    def _judged(
        self, conn: Any, config_key: str, model_id: str, decision: promotion.Decision, evidence: dict[str, Any]
    ) -> None:
        """Record the decision on a candidate with its evidence, promote or reject it, and start the next round."""
        stage = transition(Stage.EVALUATION, Stage.PROMOTION)
        queries.insert_decision(
            conn,
            config_key=config_key,
            kind="promotion",
            outcome="promoted" if decision.promote else "rejected",
            evidence={"model_id": model_id, "reason": decision.reason, **evidence},
            now=self.clock(),
        )
        if decision.promote:
            self.models.promote(model_id, reason=decision.reason, guard=self.fence)
        else:
            self.models.reject(model_id, reason=decision.reason)
        log.info(
            "%s: %s %s (%s)", config_key, "promoted" if decision.promote else "rejected", model_id, decision.reason
        )
        self._next_round(conn, config_key, stage)

    def _results(self, model_id: str) -> dict[str, promotion.Result]:
        return {
            match["player_b"]: promotion.Result(match["wins"], match["draws"], match["losses"])
            for match in self.models.matches(model_id)
        }

    # --- failures -------------------------------------------------------------------------------

    def _on_job_dead(self, event: Event) -> None:
        payload = event.payload
        if payload["job_type"] not in ROUND_JOBS:
            return
        job = self.queue.get(int(payload["job_id"]))
        if job.payload.get("purpose") == "tournament":
            return  # a lost tournament pairing costs its games only; no round waits for it
        iteration = int(job.payload.get("iteration", -1))
        stage = {jobs.EXPORT: Stage.EXPORT, jobs.TRAIN: Stage.TRAINING, jobs.EVALUATE: Stage.EVALUATION}[job.type]
        with self.store.transaction() as conn:
            if self._state_at(conn, job.config_key, stage, iteration) is None:
                return
            if job.type == jobs.EVALUATE:
                self.models.reject(job.payload["model_id"], reason=f"evaluation job {job.id} died")
            queries.insert_decision(
                conn,
                config_key=job.config_key,
                kind="round",
                outcome="abandoned",
                evidence={"job_id": job.id, "job_type": job.type, "error": payload["error"], "iteration": iteration},
                now=self.clock(),
            )
            log.warning("%s: round %d abandoned: %s job %d died", job.config_key, iteration, job.type, job.id)
            self._next_round(conn, job.config_key, stage)

    # --- helpers ----------------------------------------------------------------------------------

    def _state_at(self, conn: Any, config_key: str, stage: Stage, iteration: int) -> Any:
        """The pipeline row if it is at `stage` of round `iteration`, else None (a stale or replayed event)."""
        state = queries.get_pipeline(conn, config_key, for_update=True)
        if state is None or state["stage"] != stage or int(state["iteration"]) != iteration:
            return None
        return state

    def _next_round(self, conn: Any, config_key: str, current: Stage) -> None:
        state = queries.get_pipeline(conn, config_key)
        assert state is not None
        queries.update_pipeline(
            conn,
            config_key,
            self.clock(),
            stage=transition(current, Stage.SELFPLAY).value,
            iteration=int(state["iteration"]) + 1,
        )
        self.maybe_export(config_key)
