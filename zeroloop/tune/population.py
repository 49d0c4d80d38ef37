"""The leader's look at each running tune: budget, ratings, failures, new variants, exploit and explore, matches.

One `tick()` per `tune.interval_s` (the `tune` daemon) does, for every running tune, in order:

1. **budget**: sums the CPU- and GPU-seconds of the population's completed jobs (its
   variants' and its population matches'); once either budget is spent the tune finishes:
   every variant's pipeline is paused, its queued selfplay cancelled, the best variant named;
2. **ratings**: fits the population's joint rating (zeroloop.tune.rating) and stores each
   variant's Elo and the chart's point (its CPU-seconds, its Elo);
3. **failures**: drops a variant whose settings keep killing jobs (`drop_after_dead_jobs`
   dead jobs) or whose training diverges (a loss above `diverge_loss` or not finite): its
   pipeline is paused and its queued jobs cancelled; the others go on;
4. **new variants**: fills the population up to its size: settings proposed by Optuna
   (zeroloop.tune.sampler) from the trials so far, a first model written with them (a fresh
   network of the proposed shape, or the config's production weights), promoted into the
   variant's own pipeline, which selfplay then serves under the scheduler's weights;
5. **exploit and explore** (zeroloop.tune.pbt, zeroloop.tune.space): a weak ready variant
   copies a strong one's production model with perturbed settings. A variant in the middle
   of a round is paused first and copies once the round is over, so no candidate trained
   under its old settings can undo the copy;
6. **matches**: every new production model plays the `match_opponents` other variants
   nearest in rating (`match_games` games each, evaluate jobs under the population key).

Every proposal, exploit, explore, drop and the end is a decision (kind `tune`) of the
config key, with its evidence. Writes are fenced by the leader lease.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Connection, RowMapping

from zeroloop.errors import LeaseError
from zeroloop.events.consumer import is_transient
from zeroloop.pipeline import jobs
from zeroloop.ports import AppParts
from zeroloop.store.queries import models as model_queries
from zeroloop.store.queries import pipelines as pipeline_queries
from zeroloop.store.queries import tunes as queries
from zeroloop.tune import sampler
from zeroloop.tune.effects import Effects, Fence
from zeroloop.tune.exploit import Exploiter
from zeroloop.tune.matches import schedule_matches
from zeroloop.tune.names import FINISHED, RUNNING, STOPPED, population_key, variant_name
from zeroloop.tune.rating import population_ratings
from zeroloop.tune.space import Space

log = logging.getLogger(__name__)

DIVERGED = "diverged"  # in the error of a training the workload stopped for a loss that is not finite
SERIES_POINTS = 500  # chart points kept per variant


class Population:
    """Runs every tune's step (see the module docstring); run it on the leader only."""

    def __init__(
        self, parts: AppParts, *, fence: Fence | None = None, clock: Callable[[], float] | None = None
    ) -> None:
        """`fence(conn)` refuses writes unless this process still leads."""
        self.fx = Effects(parts, fence, clock)
        self.settings = parts.settings.tune
        self.exploiter = Exploiter(self.fx, self.settings)

    # --- the tick --------------------------------------------------------------------------------

    def tick(self) -> dict[int, list[str]]:
        """One look at every running tune; what was done, per tune id."""
        with self.fx.parts.store.read() as conn:
            running = [int(row["id"]) for row in queries.list_tunes(conn, status=RUNNING)]
        done: dict[int, list[str]] = {}
        for tune_id in running:
            try:
                done[tune_id] = self.step(tune_id)
            except Exception as exc:
                if isinstance(exc, LeaseError) or is_transient(exc):
                    raise  # a deposed leader stops; a store outage is the daemon's to wait out
                # A step that fails (a model file that cannot be written, a workload's error) is this tune's:
                # logged and shown with the tune, tried again at the next tick; the other tunes go on.
                log.error("tune %d: step failed: %s", tune_id, exc, exc_info=exc)
                done[tune_id] = [f"failed: {exc}"]
                self._note_error(tune_id, f"{type(exc).__name__}: {exc}")
        return done

    def _note_error(self, tune_id: int, error: str) -> None:
        with self.fx.parts.store.transaction() as conn:
            self.fx.fence(conn)
            tune = self.fx.tune(conn, tune_id)
            progress = {**(tune["progress"] or {}), "last_error": {"at": self.fx.clock(), "error": error[:2000]}}
            queries.update_tune(conn, tune_id, self.fx.clock(), progress=progress)

    def step(self, tune_id: int) -> list[str]:
        """One look at one tune; a list of what was done."""
        done: list[str] = []
        if self._account(tune_id, done):
            return done
        self._rate(tune_id)
        self._check_failures(tune_id, done)
        self._fill(tune_id, done)
        self.exploiter.exploit(tune_id, done)
        schedule_matches(self.fx, self.settings, tune_id, done)
        return done

    # --- reading --------------------------------------------------------------------------------

    # --- 1. budget ---------------------------------------------------------------------------------

    def _account(self, tune_id: int, done: list[str]) -> bool:
        """Record what the population spent; finish the tune (True) once a budget is spent."""
        now = self.fx.clock()
        with self.fx.parts.store.transaction() as conn:
            self.fx.fence(conn)
            tune = self.fx.tune(conn, tune_id)
            trials = queries.trials_of(conn, tune_id)
            keys = sorted({t["variant"] for t in trials} | {population_key(tune)})
            spent = queries.job_seconds(conn, keys, float(tune["created_at"]))
            cpu = sum(s[0] for s in spent.values())
            gpu = sum(s[1] for s in spent.values())
            queries.update_tune(conn, tune_id, now, spent_cpu_s=cpu, spent_gpu_s=gpu)
            for trial in trials:
                if trial["status"] == RUNNING:
                    own = queries.job_seconds(conn, [trial["variant"]], float(trial["started_at"]))[trial["variant"]]
                    queries.update_trial(conn, int(trial["id"]), now, cpu_s=own[0], gpu_s=own[1])
            over = [
                f"{what} budget {budget:g} s spent ({used:.0f} s)"
                for what, budget, used in (("CPU", tune["budget_cpu_s"], cpu), ("GPU", tune["budget_gpu_s"], gpu))
                if budget is not None and used >= float(budget)
            ]
            if not over:
                return False
            self._finish(conn, self.fx.tune(conn, tune_id), "; ".join(over))
        done.append("finished")
        return True

    def stop(self, tune_id: int, reason: str) -> None:
        """End a running tune by hand, as a spent budget would (status `stopped`)."""
        with self.fx.parts.store.transaction() as conn:
            self.fx.fence(conn)
            tune = self.fx.tune(conn, tune_id)
            if tune["status"] == RUNNING:
                self._finish(conn, tune, reason, status=STOPPED)

    def _finish(self, conn: Connection, tune: RowMapping, reason: str, *, status: str = FINISHED) -> None:
        """End a tune: every variant paused and its queued selfplay cancelled, running trials ended, the best named."""
        now = self.fx.clock()
        trials = queries.trials_of(conn, int(tune["id"]))
        for trial in trials:
            if trial["status"] == RUNNING:
                queries.update_trial(conn, int(trial["id"]), now, status="ended", ended_at=now, reason=reason)
        variants = sorted({t["variant"] for t in trials})
        for variant in variants:
            self.fx.hold(conn, variant, f"tune {tune['id']} finished: {reason}")
        for key in [*variants, population_key(tune)]:
            self.fx.cancel_queued(key, types=(jobs.EVALUATE,) if key == population_key(tune) else None)
        best = best_trial(queries.trials_of(conn, int(tune["id"])))
        record = None
        if best is not None:
            record = {"variant": best["variant"], "trial": int(best["id"]), "elo": best["elo"]}
            record["settings"] = best["settings"]
        queries.update_tune(conn, int(tune["id"]), now, status=status, finished_at=now, reason=reason)
        self.fx.decide(
            conn,
            tune,
            status,
            {
                "reason": reason,
                "spent_cpu_s": round(float(tune["spent_cpu_s"]), 1),
                "spent_gpu_s": round(float(tune["spent_gpu_s"]), 1),
                "best": record,
                "trials": len(trials),
            },
        )
        log.info("tune %s of %s finished: %s; best %s", tune["id"], tune["config_key"], reason, record)

    # --- 2. ratings --------------------------------------------------------------------------------

    def _rate(self, tune_id: int) -> None:
        """Fit the population's joint rating; store each running variant's Elo and its chart point."""
        now = self.fx.clock()
        with self.fx.parts.store.transaction() as conn:
            self.fx.fence(conn)
            tune = self.fx.tune(conn, tune_id)
            trials = queries.trials_of(conn, tune_id)
            keys = sorted({t["variant"] for t in trials} | {population_key(tune)})
            fitted = population_ratings(conn, keys, self.fx.parts.settings.evaluation.rating_prior_games)
            progress = dict(tune["progress"] or {})
            progress["ratings"] = {name: [round(e.elo, 1), round(e.stderr, 1)] for name, e in fitted.items()}
            series: dict[str, list[list[float]]] = dict(progress.get("series") or {})
            spent_by_variant: dict[str, float] = {}
            for trial in trials:
                spent_by_variant[trial["variant"]] = spent_by_variant.get(trial["variant"], 0.0) + float(trial["cpu_s"])
            for trial in trials:
                if trial["status"] != RUNNING:
                    continue
                production = model_queries.production_model(conn, trial["variant"])
                estimate = fitted.get(production["id"]) if production is not None else None
                if estimate is None or not math.isfinite(estimate.stderr):
                    continue
                queries.update_trial(conn, int(trial["id"]), now, elo=estimate.elo, elo_stderr=estimate.stderr)
                point = [round(spent_by_variant[trial["variant"]], 1), round(estimate.elo, 1)]
                line = list(series.get(trial["variant"], []))
                if not line or line[-1] != point:
                    line.append(point)
                series[trial["variant"]] = line[-SERIES_POINTS:]
            progress["series"] = series
            queries.update_tune(conn, tune_id, now, progress=progress)

    # --- 3. failures ------------------------------------------------------------------------------

    def _check_failures(self, tune_id: int, done: list[str]) -> None:
        with self.fx.parts.store.read() as conn:
            trials = queries.trials_of(conn, tune_id, status=RUNNING)
            failing = [(trial, self._failure(conn, trial)) for trial in trials]
        for trial, why in failing:
            if why is not None:
                self.drop(tune_id, int(trial["id"]), why)
                done.append(f"dropped {trial['variant']}")

    def _failure(self, conn: Connection, trial: RowMapping) -> dict[str, Any] | None:
        """Why a running trial fails (its jobs keep dying, or its training diverged), or None."""
        since = float(trial["started_at"])
        dead = queries.dead_jobs(conn, trial["variant"], since)
        for job in dead:  # the workload names a diverged training (a loss that is not finite): drop it at once
            if job["type"] == jobs.TRAIN and DIVERGED in (job["error"] or ""):
                return {"why": "its training diverged", "job": int(job["id"]), "error": job["error"][:300]}
        if len(dead) >= self.settings.drop_after_dead_jobs:
            return {
                "why": f"{len(dead)} of its jobs died under these settings",
                "dead_jobs": [
                    {"job": int(d["id"]), "type": d["type"], "error": (d["error"] or "")[:300]} for d in dead
                ],
            }
        for job_id, loss in queries.training_losses(conn, trial["variant"], since):
            if not math.isfinite(loss) or loss > self.settings.diverge_loss:
                return {
                    "why": f"its training diverged: loss {loss} (limit {self.settings.diverge_loss:g})",
                    "job": job_id,
                    "loss": loss if math.isfinite(loss) else str(loss),
                }
        return None

    def drop(self, tune_id: int, trial_id: int, evidence: dict[str, Any]) -> None:
        """Drop a variant: its trial fails, its pipeline is paused and its queued jobs cancelled; the others go on."""
        now = self.fx.clock()
        with self.fx.parts.store.transaction() as conn:
            self.fx.fence(conn)
            tune = self.fx.tune(conn, tune_id)
            trial = next(t for t in queries.trials_of(conn, tune_id) if int(t["id"]) == trial_id)
            reason = str(evidence["why"])
            queries.update_trial(conn, trial_id, now, status="dropped", ended_at=now, reason=reason)
            self.fx.hold(conn, trial["variant"], f"tune {tune_id}: dropped ({reason})")
            pending = dict((tune["progress"] or {}).get("pending") or {})
            pending.pop(trial["variant"], None)
            queries.update_tune(conn, tune_id, now, progress={**(tune["progress"] or {}), "pending": pending})
            self.fx.decide(conn, tune, "dropped", {"variant": trial["variant"], "trial": trial_id, **evidence})
        self.fx.cancel_queued(trial["variant"], types=jobs.JOB_TYPES)
        log.warning("tune %d: dropped %s: %s", tune_id, trial["variant"], reason)

    # --- 4. new variants ---------------------------------------------------------------------------

    def _fill(self, tune_id: int, done: list[str]) -> None:
        """Start variants until the population is full (replacing dropped ones if `replace_dropped`)."""
        for _ in range(64):  # bounded: a population is at most 64 variants
            with self.fx.parts.store.read() as conn:
                tune = queries.get_tune(conn, tune_id)
                assert tune is not None
                trials = queries.trials_of(conn, tune_id)
            running = sum(1 for t in trials if t["status"] == RUNNING)
            started = len({t["variant"] for t in trials})
            size = int(tune["variants"])
            if running >= size or (started >= size and not self.settings.replace_dropped):
                return
            done.append(f"started {self._start_variant(tune, trials, started + 1)}")

    def _start_variant(self, tune: RowMapping, trials: list[RowMapping], number: int) -> str:
        """Propose settings, write the variant's first model, and start its pipeline with it as production."""
        space = Space.from_record(tune["space"])
        told = [
            sampler.Told(dict(t["settings"]), None if t["status"] == "dropped" else t["elo"])
            for t in trials
            if t["status"] != RUNNING
        ]
        seed = int(tune["id"]) * 100_003 + len(trials)
        settings, used = sampler.propose(space, told, tune["sampler"], seed=seed, startup=int(tune["variants"]))
        variant = variant_name(tune, number)
        start_from = (tune["progress"] or {}).get("start_from")
        source = None
        if start_from is not None:
            with self.fx.parts.store.read() as conn:
                origin = model_queries.get_model(conn, start_from["model_id"])
            if origin is not None:
                source = self.fx.parts.artifacts.fetch(origin["artifact_sha256"])
        sha, shape = self.fx.write(variant, settings, source=source, seed=seed)
        now = self.fx.clock()
        with self.fx.parts.store.transaction() as conn:
            self.fx.fence(conn)
            pipeline_queries.ensure_pipeline(conn, variant, now)
            model = self.fx.parts.models.register_candidate(
                config_key=variant,
                artifact_sha256=sha,
                parent_id=start_from["model_id"] if source is not None and start_from else None,
                window_sha256=None,
                job_ids=[],
                iteration=0,
                meta={"tune": {"id": int(tune["id"]), "origin": "proposed", "fresh": source is None, **shape}},
            )
            self.fx.parts.models.promote(model.id, reason=f"tune {tune['id']}: first model", guard=self.fx.fence)
            trial_id = queries.insert_trial(
                conn,
                {
                    "tune_id": int(tune["id"]),
                    "variant": variant,
                    "number": len(trials),
                    "settings": settings,
                    "origin": "proposed",
                    "parent_id": None,
                    "start_model_id": model.id,
                    "status": RUNNING,
                    "cpu_s": 0.0,
                    "gpu_s": 0.0,
                    "started_at": now,
                    "updated_at": now,
                },
            )
            self.fx.decide(
                conn,
                self.fx.tune(conn, int(tune["id"])),
                "proposed",
                {
                    "variant": variant,
                    "trial": trial_id,
                    "sampler": tune["sampler"],
                    "settings": settings,
                    "told_trials": used,
                    "seed": seed,
                    "model_id": model.id,
                    "starts_from": start_from["model_id"] if source is not None and start_from else "a fresh network",
                    "reason": f"{tune['sampler']} proposal from {used} finished trials",
                },
            )
        log.info("tune %s: %s starts with %s", tune["id"], variant, settings)
        return variant

    # --- 5. exploit and explore ---------------------------------------------------------------------

    # --- 6. matches between variants ------------------------------------------------------------------


def best_trial(trials: list[RowMapping]) -> RowMapping | None:
    """The rated trial with the highest joint rating (dropped ones left out), or None."""
    rated = [t for t in trials if t["elo"] is not None and t["status"] != "dropped"]
    return max(rated, key=lambda t: float(t["elo"]), default=None)
