"""Named operations on tunes for the CLI, the dashboard and the library: start, stop, adopt, distill, read.

`start` records a tune and nothing more: the leader's `tune` daemon proposes the variants'
settings, writes their first models and starts their pipelines (zeroloop.tune.population).
`adopt` makes the best variant's production model the config key's own production model;
its settings ride in that model file, so the config's pipeline plays and trains with them
from its next job, and every model trained from it keeps them. `distill` enqueues a
distillation of a model into a smaller network, which is rated like any model once it is
trained (zeroloop.tune.distill).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from zeroloop.errors import RegistryError, TuneError
from zeroloop.pipeline import jobs
from zeroloop.pipeline.registry import ModelStage
from zeroloop.ports import AppParts
from zeroloop.store.queries import artifacts as artifact_queries
from zeroloop.store.queries import models as model_queries
from zeroloop.store.queries import pipelines as pipeline_queries
from zeroloop.store.queries import tunes as queries
from zeroloop.tune import sampler
from zeroloop.tune.names import FINISHED, RUNNING, STOPPED, population_key
from zeroloop.tune.population import best_trial
from zeroloop.tune.space import Space
from zeroloop.workload.keys import is_variant

DISTILL_PRIORITY = 45  # after a round's jobs, before tournaments and selfplay


def start(
    app: AppParts,
    config_key: str,
    *,
    variants: int | None = None,
    budget_cpu_s: float | None = None,
    budget_gpu_s: float | None = None,
    sampler_name: str | None = None,
) -> int:
    """Record a tune of `config_key`'s settings; its id. TuneError when one runs already or it cannot run here.

    Without a budget, the `tune.budget_cpu_s` default applies. When the config key has a
    production model, every variant starts from its weights (so the network's shape is not
    varied); otherwise from fresh networks of the proposed shapes.
    """
    settings = app.settings.tune
    size = variants if variants is not None else settings.variants
    chosen = sampler_name or settings.sampler
    if app.settings.workload.kind != "alphazero":
        raise TuneError(
            f"a tune varies the built-in AlphaZero's settings; workload.kind is {app.settings.workload.kind!r}"
        )
    if is_variant(config_key):
        raise TuneError(f"{config_key!r} is a tune's variant; tune its config key instead")
    if not 2 <= size <= 64:
        raise TuneError(f"a population needs 2 to 64 variants, not {size}")
    if chosen not in ("tpe", "cmaes"):
        raise TuneError(f"unknown sampler {chosen!r}: use tpe or cmaes")
    for name, budget in (("CPU", budget_cpu_s), ("GPU", budget_gpu_s)):
        if budget is not None and not budget > 0:
            raise TuneError(f"a {name} budget must be above 0 seconds, not {budget}")
    if not sampler.available():
        raise TuneError("a tune proposes settings with Optuna: install the tune extra (pip install 'zeroloop[tune]')")
    if importlib.util.find_spec("torch") is None:
        raise TuneError("a tune writes its variants' models with torch: install the alphazero extra here")
    if budget_cpu_s is None and budget_gpu_s is None:
        budget_cpu_s = settings.budget_cpu_s
    now = app.clock()
    with app.store.transaction() as conn:
        running = queries.list_tunes(conn, config_key=config_key, status=RUNNING)
        if running:
            raise TuneError(f"tune {running[0]['id']} of {config_key} is running: stop it first (zeroloop tune stop)")
        production = model_queries.production_model(conn, config_key)
        space = Space.of(settings, fixed_shape=production is not None)
        start_from = {"model_id": production["id"]} if production is not None else None
        tune_id = queries.insert_tune(
            conn,
            {
                "config_key": config_key,
                "status": RUNNING,
                "sampler": chosen,
                "variants": size,
                "budget_cpu_s": budget_cpu_s,
                "budget_gpu_s": budget_gpu_s,
                "spent_cpu_s": 0.0,
                "spent_gpu_s": 0.0,
                "space": space.record(),
                "progress": {"start_from": start_from} if start_from else {},
                "created_at": now,
                "updated_at": now,
            },
        )
        pipeline_queries.insert_decision(
            conn,
            config_key=config_key,
            kind="tune",
            outcome="started",
            evidence={
                "tune": tune_id,
                "variants": size,
                "sampler": chosen,
                "budget_cpu_s": budget_cpu_s,
                "budget_gpu_s": budget_gpu_s,
                "space": space.record(),
                "starts_from": start_from["model_id"] if start_from else "fresh networks",
                "reason": f"{size} variants proposed by {chosen}, budget "
                + ", ".join(f"{b:g} {w}-s" for w, b in (("CPU", budget_cpu_s), ("GPU", budget_gpu_s)) if b),
            },
            now=now,
        )
    return tune_id


def stop(app: AppParts, config_key: str) -> int:
    """Stop the running tune of `config_key` by hand: its variants are paused and its queued selfplay cancelled."""
    from zeroloop.tune.population import Population

    with app.store.read() as conn:
        running = queries.list_tunes(conn, config_key=config_key, status=RUNNING)
    if not running:
        raise TuneError(f"no tune of {config_key} is running: see zeroloop tune show {config_key}")
    tune_id = int(running[0]["id"])
    Population(app).stop(tune_id, "stopped by hand")
    return tune_id


def latest(app: AppParts, config_key: str) -> dict[str, Any]:
    """The newest tune of `config_key` with its trials, oldest first; TuneError when it has none."""
    with app.store.read() as conn:
        found = queries.list_tunes(conn, config_key=config_key)
        if not found:
            raise TuneError(f"{config_key} has no tune: start one with zeroloop tune start {config_key}")
        tune = dict(found[0])
        tune["trials"] = [dict(t) for t in queries.trials_of(conn, int(tune["id"]))]
        tune["population_key"] = population_key(tune)
    return tune


def adopt(app: AppParts, config_key: str, *, variant: str | None = None) -> dict[str, Any]:
    """Make the best variant's production model (or `variant`'s) the production model of `config_key`.

    The model file carries the variant's settings, so the config's pipeline runs with them
    from its next job. Recorded as a `tune`/`adopted` decision; returns what was adopted.
    """
    tune = latest(app, config_key)
    trials = [t for t in tune["trials"] if variant is None or t["variant"] == variant]
    if variant is not None and not trials:
        raise TuneError(f"tune {tune['id']} of {config_key} has no variant {variant!r}")
    if variant is not None:
        trials = [max(trials, key=lambda t: t["id"])]  # the variant's settings now
    best = best_trial(trials)
    if best is None:
        raise TuneError(f"tune {tune['id']} of {config_key} has no rated variant yet: wait for its first matches")
    now = app.clock()
    with app.store.transaction() as conn:
        production = model_queries.production_model(conn, best["variant"])
        if production is None:
            raise TuneError(f"variant {best['variant']} has no production model")
        pipeline_queries.ensure_pipeline(conn, config_key, now)
        state = pipeline_queries.get_pipeline(conn, config_key, for_update=True)
        assert state is not None
        try:
            model = app.models.register_candidate(
                config_key=config_key,
                artifact_sha256=production["artifact_sha256"],
                parent_id=production["id"],
                window_sha256=production["window_sha256"],
                job_ids=[],
                iteration=int(state["iteration"]),
                meta={"tune": {"id": int(tune["id"]), "origin": "adopted", "variant": best["variant"]}},
            )
        except RegistryError as exc:
            raise TuneError(f"cannot adopt {production['id']}: {exc}") from None
        if model.stage is not ModelStage.PRODUCTION:
            app.models.promote(model.id, reason=f"tune {tune['id']}: adopted {best['variant']}")
        queries.update_tune(conn, int(tune["id"]), now, adopted_at=now)
        record = {
            "tune": int(tune["id"]),
            "variant": best["variant"],
            "trial": int(best["id"]),
            "elo": best["elo"],
            "settings": best["settings"],
            "model_id": model.id,
            "copied": production["id"],
            "reason": f"{best['variant']} rated {best['elo']:.0f} Elo, the best of tune {tune['id']}",
        }
        pipeline_queries.insert_decision(
            conn, config_key=config_key, kind="tune", outcome="adopted", evidence=record, now=now
        )
    return record


def distill(
    app: AppParts,
    config_key: str,
    *,
    blocks: int,
    channels: int,
    teacher: str | None = None,
    steps: int | None = None,
) -> int:
    """Enqueue a distillation of `teacher` (default: the production model) into a `blocks` x `channels` network.

    The student learns on the teacher's own training window (or, for a model trained on
    none, the config's newest window). Returns the job id.
    """
    if blocks < 0 or channels < 1:
        raise TuneError(f"a distilled network needs blocks >= 0 and channels >= 1, not {blocks} and {channels}")
    with app.store.transaction() as conn:
        model = model_queries.get_model(conn, teacher) if teacher else model_queries.production_model(conn, config_key)
        if model is None:
            what = f"no model {teacher!r}" if teacher else f"{config_key} has no production model yet"
            raise TuneError(f"nothing to distill: {what}")
        window = model["window_sha256"]
        if window is None:
            newest = artifact_queries.list_artifacts(
                conn, config_key=model["config_key"], kind="training_window", limit=1
            )
            if not newest:
                raise TuneError(f"{model['id']} was trained on no window and {config_key} has none to distill on")
            window = newest[0]["sha256"]
        payload = jobs.DistillJob(
            teacher_id=model["id"],
            teacher_sha256=model["artifact_sha256"],
            window_sha256=window,
            iteration=int((model["meta"] or {}).get("iteration", 0) or 0),
            blocks=blocks,
            channels=channels,
            steps=steps or app.settings.tune.distill_steps,
            value_mix=app.settings.tune.distill_value_mix,
        )
        job = app.queue.enqueue(
            jobs.DISTILL,
            model["config_key"],
            payload.model_dump(),
            priority=DISTILL_PRIORITY,
            idempotency_key=f"{model['id']}:distill:{blocks}x{channels}:{payload.steps}",
        )
        pipeline_queries.insert_decision(
            conn,
            config_key=model["config_key"],
            kind="distill",
            outcome="enqueued",
            evidence={
                "job_id": job.id,
                "teacher": model["id"],
                "blocks": blocks,
                "channels": channels,
                "steps": payload.steps,
                "window_sha256": window,
                "reason": f"distil {model['id']} into {blocks} blocks x {channels} channels",
            },
            now=app.clock(),
        )
    return job.id


def status_names() -> tuple[str, ...]:
    """Every status a tune can have."""
    return (RUNNING, FINISHED, STOPPED)
