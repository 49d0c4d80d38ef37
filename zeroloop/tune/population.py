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
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.engine import Connection, RowMapping

from zeroloop.errors import LeaseError
from zeroloop.events.consumer import is_transient
from zeroloop.pipeline import jobs
from zeroloop.pipeline.registry import ModelStage
from zeroloop.pipeline.stages import Stage
from zeroloop.ports import AppParts
from zeroloop.queue.jobs import JobStatus
from zeroloop.store.queries import models as model_queries
from zeroloop.store.queries import pipelines as pipeline_queries
from zeroloop.store.queries import tunes as queries
from zeroloop.tune import pbt, sampler
from zeroloop.tune.names import FINISHED, RUNNING, STOPPED, population_key, variant_name
from zeroloop.tune.rating import population_ratings
from zeroloop.tune.space import Space, Tuned

log = logging.getLogger(__name__)

Fence = Callable[[Connection], None]
Writer = Callable[..., dict[str, int]]
DIVERGED = "diverged"  # in the error of a training the workload stopped for a loss that is not finite
MATCH_PRIORITY = 40  # as tournaments: after a round's jobs, before selfplay
SERIES_POINTS = 500  # chart points kept per variant


def _no_fence(_conn: Connection) -> None:
    """No lease to check (a single process, or a test)."""


def _member_writer() -> Writer:
    from zeroloop.workload.members import write_member  # torch and OpenSpiel: only where a tune runs

    return write_member


class Population:
    """Runs every tune's step (see the module docstring); run it on the leader only."""

    def __init__(
        self, parts: AppParts, *, fence: Fence | None = None, clock: Callable[[], float] | None = None
    ) -> None:
        """`fence(conn)` refuses writes unless this process still leads."""
        self.parts = parts
        self.settings = parts.settings.tune
        self.fence = fence or _no_fence
        self.clock = clock or parts.clock
        self.workdir = parts.settings.data_dir / "work" / "tune"

    # --- the tick --------------------------------------------------------------------------------

    def tick(self) -> dict[int, list[str]]:
        """One look at every running tune; what was done, per tune id."""
        with self.parts.store.read() as conn:
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
        with self.parts.store.transaction() as conn:
            self.fence(conn)
            tune = self._tune(conn, tune_id)
            progress = {**(tune["progress"] or {}), "last_error": {"at": self.clock(), "error": error[:2000]}}
            queries.update_tune(conn, tune_id, self.clock(), progress=progress)

    def step(self, tune_id: int) -> list[str]:
        """One look at one tune; a list of what was done."""
        done: list[str] = []
        if self._account(tune_id, done):
            return done
        self._rate(tune_id)
        self._check_failures(tune_id, done)
        self._fill(tune_id, done)
        self._exploit(tune_id, done)
        self._schedule_matches(tune_id, done)
        return done

    # --- reading --------------------------------------------------------------------------------

    def _tune(self, conn: Connection, tune_id: int) -> RowMapping:
        row = queries.get_tune(conn, tune_id, for_update=True)
        assert row is not None
        return row

    def _decide(self, conn: Connection, tune: RowMapping, outcome: str, evidence: dict[str, Any]) -> None:
        pipeline_queries.insert_decision(
            conn,
            config_key=tune["config_key"],
            kind="tune",
            outcome=outcome,
            evidence={"tune": int(tune["id"]), **evidence},
            now=self.clock(),
        )

    # --- 1. budget ---------------------------------------------------------------------------------

    def _account(self, tune_id: int, done: list[str]) -> bool:
        """Record what the population spent; finish the tune (True) once a budget is spent."""
        now = self.clock()
        with self.parts.store.transaction() as conn:
            self.fence(conn)
            tune = self._tune(conn, tune_id)
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
            self._finish(conn, self._tune(conn, tune_id), "; ".join(over))
        done.append("finished")
        return True

    def stop(self, tune_id: int, reason: str) -> None:
        """End a running tune by hand, as a spent budget would (status `stopped`)."""
        with self.parts.store.transaction() as conn:
            self.fence(conn)
            tune = self._tune(conn, tune_id)
            if tune["status"] == RUNNING:
                self._finish(conn, tune, reason, status=STOPPED)

    def _finish(self, conn: Connection, tune: RowMapping, reason: str, *, status: str = FINISHED) -> None:
        """End a tune: every variant paused and its queued selfplay cancelled, running trials ended, the best named."""
        now = self.clock()
        trials = queries.trials_of(conn, int(tune["id"]))
        for trial in trials:
            if trial["status"] == RUNNING:
                queries.update_trial(conn, int(trial["id"]), now, status="ended", ended_at=now, reason=reason)
        variants = sorted({t["variant"] for t in trials})
        for variant in variants:
            self._hold(conn, variant, f"tune {tune['id']} finished: {reason}")
        for key in [*variants, population_key(tune)]:
            self._cancel_queued(key, types=(jobs.EVALUATE,) if key == population_key(tune) else None)
        best = best_trial(queries.trials_of(conn, int(tune["id"])))
        record = None
        if best is not None:
            record = {"variant": best["variant"], "trial": int(best["id"]), "elo": best["elo"]}
            record["settings"] = best["settings"]
        queries.update_tune(conn, int(tune["id"]), now, status=status, finished_at=now, reason=reason)
        self._decide(
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

    def _hold(self, conn: Connection, variant: str, reason: str) -> None:
        """Pause a variant's pipeline (no new rounds, no new selfplay) and say why."""
        state = pipeline_queries.get_pipeline(conn, variant, for_update=True)
        if state is None or state["paused"]:
            return
        pipeline_queries.update_pipeline(conn, variant, self.clock(), paused=True, pause_reason=reason)
        self.parts.bus.publish("PIPELINE_PAUSED", {"config_key": variant, "reason": reason})

    def _release(self, conn: Connection, variant: str, reason: str) -> None:
        """Resume a variant's pipeline held by the tune."""
        state = pipeline_queries.get_pipeline(conn, variant, for_update=True)
        if state is None or not state["paused"]:
            return
        pipeline_queries.update_pipeline(conn, variant, self.clock(), paused=False, pause_reason=None)
        self.parts.bus.publish("PIPELINE_RESUMED", {"config_key": variant, "reason": reason})

    def _cancel_queued(self, config_key: str, types: tuple[str, ...] | None = None) -> int:
        """Cancel the queued jobs of a key (of `types`, else its selfplay): a round in flight finishes."""
        cancelled = 0
        for job_type in types or (jobs.SELFPLAY,):
            for job in self.parts.queue.list(
                statuses=[JobStatus.QUEUED], job_type=job_type, config_key=config_key, limit=10_000
            ):
                self.parts.queue.cancel(job.id)
                cancelled += 1
        return cancelled

    # --- 2. ratings --------------------------------------------------------------------------------

    def _rate(self, tune_id: int) -> None:
        """Fit the population's joint rating; store each running variant's Elo and its chart point."""
        now = self.clock()
        with self.parts.store.transaction() as conn:
            self.fence(conn)
            tune = self._tune(conn, tune_id)
            trials = queries.trials_of(conn, tune_id)
            keys = sorted({t["variant"] for t in trials} | {population_key(tune)})
            fitted = population_ratings(conn, keys, self.parts.settings.evaluation.rating_prior_games)
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
        with self.parts.store.read() as conn:
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
        now = self.clock()
        with self.parts.store.transaction() as conn:
            self.fence(conn)
            tune = self._tune(conn, tune_id)
            trial = next(t for t in queries.trials_of(conn, tune_id) if int(t["id"]) == trial_id)
            reason = str(evidence["why"])
            queries.update_trial(conn, trial_id, now, status="dropped", ended_at=now, reason=reason)
            self._hold(conn, trial["variant"], f"tune {tune_id}: dropped ({reason})")
            pending = dict((tune["progress"] or {}).get("pending") or {})
            pending.pop(trial["variant"], None)
            queries.update_tune(conn, tune_id, now, progress={**(tune["progress"] or {}), "pending": pending})
            self._decide(conn, tune, "dropped", {"variant": trial["variant"], "trial": trial_id, **evidence})
        self._cancel_queued(trial["variant"], types=jobs.JOB_TYPES)
        log.warning("tune %d: dropped %s: %s", tune_id, trial["variant"], reason)

    # --- 4. new variants ---------------------------------------------------------------------------

    def _fill(self, tune_id: int, done: list[str]) -> None:
        """Start variants until the population is full (replacing dropped ones if `replace_dropped`)."""
        for _ in range(64):  # bounded: a population is at most 64 variants
            with self.parts.store.read() as conn:
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
            with self.parts.store.read() as conn:
                origin = model_queries.get_model(conn, start_from["model_id"])
            if origin is not None:
                source = self.parts.artifacts.fetch(origin["artifact_sha256"])
        sha, shape = self._write(variant, settings, source=source, seed=seed)
        now = self.clock()
        with self.parts.store.transaction() as conn:
            self.fence(conn)
            pipeline_queries.ensure_pipeline(conn, variant, now)
            model = self.parts.models.register_candidate(
                config_key=variant,
                artifact_sha256=sha,
                parent_id=start_from["model_id"] if source is not None and start_from else None,
                window_sha256=None,
                job_ids=[],
                iteration=0,
                meta={"tune": {"id": int(tune["id"]), "origin": "proposed", "fresh": source is None, **shape}},
            )
            self.parts.models.promote(model.id, reason=f"tune {tune['id']}: first model", guard=self.fence)
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
            self._decide(
                conn,
                self._tune(conn, int(tune["id"])),
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

    def _write(self, variant: str, settings: Tuned, *, source: Path | None, seed: int) -> tuple[str, dict[str, int]]:
        """Write a member model file (weights and settings), store it; its sha256 and network shape."""
        from zeroloop.artifacts.transfer import ArtifactKind

        workdir = self.workdir / f"{variant}-{seed}"
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            output = workdir / "model.pt"
            shape = _member_writer()(self.parts.settings.workload, variant, output, settings, source=source, seed=seed)
            artifact = self.parts.artifacts.put(
                output, ArtifactKind.MODEL, config_key=variant, meta={"tuned": settings}
            )
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return artifact.sha256, shape

    # --- 5. exploit and explore ---------------------------------------------------------------------

    def _exploit(self, tune_id: int, done: list[str]) -> None:
        """Carry out pending copies whose variant finished its round; pick new ones from the ratings."""
        with self.parts.store.read() as conn:
            tune = queries.get_tune(conn, tune_id)
            assert tune is not None
            trials = {int(t["id"]): t for t in queries.trials_of(conn, tune_id, status=RUNNING)}
            pending = dict((tune["progress"] or {}).get("pending") or {})
            members = [self._member(conn, t) for t in trials.values()]
        busy = set(pending)
        rng = np.random.default_rng(tune_id * 7919 + len(trials) + int(self.clock()))
        for choice in pbt.select(members, self.settings.exploit_fraction, self.settings.exploit_min_gap_elo, rng):
            if choice.loser.variant in busy or choice.winner.variant in busy:
                continue
            busy.add(choice.loser.variant)
            pending[choice.loser.variant] = {
                "winner_trial": choice.winner.trial_id,
                "evidence": {
                    "loser": _member_record(choice.loser),
                    "winner": _member_record(choice.winner),
                    "ranks": list(choice.ranks),
                    "of": choice.of,
                },
            }
            with self.parts.store.transaction() as conn:
                self.fence(conn)
                why = f"tune {tune_id}: copies {choice.winner.variant} after its round"
                self._hold(conn, choice.loser.variant, why)
                current = self._tune(conn, tune_id)
                queries.update_tune(
                    conn, tune_id, self.clock(), progress={**(current["progress"] or {}), "pending": pending}
                )
        for loser, plan in list(pending.items()):
            if self._copy(tune_id, loser, plan):
                done.append(f"{loser} copied trial {plan['winner_trial']}")

    def _member(self, conn: Connection, trial: RowMapping) -> pbt.Member:
        rounds = queries.count_decisions(conn, trial["variant"], "promotion", float(trial["started_at"]))
        elo = trial["elo"] if trial["elo"] is not None else math.nan
        stderr = trial["elo_stderr"] if trial["elo_stderr"] is not None else math.inf
        ready = rounds >= self.settings.ready_rounds
        return pbt.Member(trial["variant"], int(trial["id"]), float(elo), float(stderr), ready)

    def _copy(self, tune_id: int, loser: str, plan: dict[str, Any]) -> bool:
        """Copy the winner's production and settings, perturbed, into `loser` once its round is over; done?"""
        with self.parts.store.read() as conn:
            tune = queries.get_tune(conn, tune_id)
            assert tune is not None
            running = {int(t["id"]): t for t in queries.trials_of(conn, tune_id, status=RUNNING)}
            state = pipeline_queries.get_pipeline(conn, loser)
            winner_trial = running.get(int(plan["winner_trial"]))
            loser_trial = next((t for t in running.values() if t["variant"] == loser), None)
            winner_model = (
                model_queries.production_model(conn, winner_trial["variant"]) if winner_trial is not None else None
            )
        if loser_trial is None or winner_trial is None or winner_model is None:
            self._forget(tune_id, loser, "the variant to copy is no longer running")
            return False
        if state is None or state["stage"] != Stage.SELFPLAY.value:
            return False  # its round is still in flight: the next look tries again
        space = Space.from_record(tune["space"])
        rng = np.random.default_rng(int(loser_trial["id"]) * 31 + int(winner_trial["id"]))
        factors = (float(self.settings.perturb_factors[0]), float(self.settings.perturb_factors[1]))
        settings, changes = space.perturb(
            dict(winner_trial["settings"]), rng, factors, self.settings.resample_probability
        )
        seed = int(loser_trial["id"]) * 1000 + int(winner_trial["id"])
        source = self.parts.artifacts.fetch(winner_model["artifact_sha256"])
        sha, _shape = self._write(loser, settings, source=source, seed=seed)
        now = self.clock()
        with self.parts.store.transaction() as conn:
            self.fence(conn)
            tune = self._tune(conn, tune_id)
            state = pipeline_queries.get_pipeline(conn, loser, for_update=True)
            assert state is not None
            model = self.parts.models.register_candidate(
                config_key=loser,
                artifact_sha256=sha,
                parent_id=winner_model["id"],
                window_sha256=winner_model["window_sha256"],
                job_ids=[],
                iteration=int(state["iteration"]),
                meta={"tune": {"id": tune_id, "origin": "exploited", "copied": winner_model["id"]}},
            )
            copied = f"copied {winner_trial['variant']}"
            self.parts.models.promote(model.id, reason=f"tune {tune_id}: {copied}", guard=self.fence)
            queries.update_trial(conn, int(loser_trial["id"]), now, status="ended", ended_at=now, reason=copied)
            trial_id = queries.insert_trial(
                conn,
                {
                    "tune_id": tune_id,
                    "variant": loser,
                    "number": len(queries.trials_of(conn, tune_id)),
                    "settings": settings,
                    "origin": "exploited",
                    "parent_id": int(winner_trial["id"]),
                    "start_model_id": model.id,
                    "status": RUNNING,
                    "cpu_s": 0.0,
                    "gpu_s": 0.0,
                    "started_at": now,
                    "updated_at": now,
                },
            )
            evidence = dict(plan["evidence"])
            self._decide(
                conn,
                tune,
                "exploited",
                {
                    **evidence,
                    "variant": loser,
                    "copied_model": winner_model["id"],
                    "model_id": model.id,
                    "reason": f"{loser} (rank {evidence['ranks'][0]} of {evidence['of']}) copies "
                    f"{winner_trial['variant']} (rank {evidence['ranks'][1]})",
                },
            )
            self._decide(
                conn,
                tune,
                "explored",
                {
                    "variant": loser,
                    "trial": trial_id,
                    "from_trial": int(winner_trial["id"]),
                    "changes": changes,
                    "settings": settings,
                },
            )
            pending = dict((tune["progress"] or {}).get("pending") or {})
            pending.pop(loser, None)
            queries.update_tune(conn, tune_id, now, progress={**(tune["progress"] or {}), "pending": pending})
            self._release(conn, loser, f"tune {tune_id}: copied {winner_trial['variant']}")
        log.info("tune %d: %s copied %s with %s", tune_id, loser, winner_model["id"], changes)
        return True

    def _forget(self, tune_id: int, loser: str, why: str) -> None:
        with self.parts.store.transaction() as conn:
            self.fence(conn)
            tune = self._tune(conn, tune_id)
            pending = dict((tune["progress"] or {}).get("pending") or {})
            pending.pop(loser, None)
            queries.update_tune(conn, tune_id, self.clock(), progress={**(tune["progress"] or {}), "pending": pending})
            if any(t["variant"] == loser for t in queries.trials_of(conn, tune_id, status=RUNNING)):
                self._release(conn, loser, f"tune {tune_id}: no copy ({why})")

    # --- 6. matches between variants ------------------------------------------------------------------

    def _schedule_matches(self, tune_id: int, done: list[str]) -> None:
        """Each new production model plays the `match_opponents` variants nearest in rating."""
        with self.parts.store.transaction() as conn:
            self.fence(conn)
            tune = self._tune(conn, tune_id)
            progress = dict(tune["progress"] or {})
            matched = list(progress.get("matched") or [])
            ratings = progress.get("ratings") or {}
            productions = []
            for trial in queries.trials_of(conn, tune_id, status=RUNNING):
                model = model_queries.production_model(conn, trial["variant"])
                if model is not None and model["stage"] == ModelStage.PRODUCTION.value:
                    fresh = bool(((model["meta"] or {}).get("tune") or {}).get("fresh"))
                    if not fresh:  # a variant's untrained first network says nothing about its settings
                        productions.append(model)
            key = population_key(tune)
            added = 0
            paired: set[tuple[str, str]] = set()
            for model in productions:
                if model["id"] in matched:
                    continue
                mine = _elo(ratings, model["id"])
                others = sorted(
                    (m for m in productions if m["config_key"] != model["config_key"]),
                    key=lambda m: _distance(_elo(ratings, m["id"]), mine),
                )
                for opponent in others[: self.settings.match_opponents]:
                    first, second = sorted((model, opponent), key=lambda m: m["id"])
                    if (first["id"], second["id"]) in paired:
                        continue  # both new in this step: one match serves both
                    paired.add((first["id"], second["id"]))
                    payload = jobs.EvaluateJob(
                        iteration=int(tune["id"]),
                        model_id=first["id"],
                        model_sha256=first["artifact_sha256"],
                        opponent=second["id"],
                        opponent_kind="model",
                        opponent_sha256=second["artifact_sha256"],
                        games=self.settings.match_games,
                        seed=len(matched),
                        purpose="tournament",
                    )
                    self.parts.queue.enqueue(
                        jobs.EVALUATE,
                        key,
                        payload.model_dump(),
                        priority=MATCH_PRIORITY,
                        idempotency_key=f"{key}:match:{first['id']}:{second['id']}",
                    )
                    added += 1
                if others:
                    matched.append(model["id"])
            if added:
                progress["matched"] = matched
                queries.update_tune(conn, tune_id, self.clock(), progress=progress)
                done.append(f"{added} matches")


def _elo(ratings: dict[str, list[float]], model_id: str) -> float:
    return float((ratings.get(model_id) or [math.nan])[0])


def _distance(elo: float, mine: float) -> float:
    """How far apart two ratings are; an unrated model (NaN) is as far as can be, so rated neighbours come first."""
    gap = abs(elo - mine)
    return gap if math.isfinite(gap) else math.inf


def best_trial(trials: list[RowMapping]) -> RowMapping | None:
    """The rated trial with the highest joint rating (dropped ones left out), or None."""
    rated = [t for t in trials if t["elo"] is not None and t["status"] != "dropped"]
    return max(rated, key=lambda t: float(t["elo"]), default=None)


def _member_record(member: pbt.Member) -> dict[str, Any]:
    return {
        "variant": member.variant,
        "trial": member.trial_id,
        "elo": round(member.elo, 1),
        "stderr": round(member.stderr, 1) if math.isfinite(member.stderr) else None,
    }
