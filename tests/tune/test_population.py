"""The leader's tune step on both store backends: proposals, budget, dropped variants, exploit and explore, matches."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tests.helpers import FakeClock
from tests.tune.conftest import CONFIG, finish_job, kill_job
from zeroloop.app import App
from zeroloop.errors import TuneError
from zeroloop.pipeline import jobs
from zeroloop.pipeline.stages import Stage
from zeroloop.queue.jobs import JobStatus
from zeroloop.store.queries import models as model_queries
from zeroloop.store.queries import pipelines as pipeline_queries
from zeroloop.store.queries import tunes as queries
from zeroloop.tune import manager
from zeroloop.tune.population import Population
from zeroloop.workload.members import member_settings
from zeroloop.workload.network import load_model_file


def _trials(app: App, tune_id: int, status: str | None = None) -> list[dict[str, Any]]:
    with app.store.read() as conn:
        return [dict(t) for t in queries.trials_of(conn, tune_id, status=status)]


def _tune(app: App, tune_id: int) -> dict[str, Any]:
    with app.store.read() as conn:
        row = queries.get_tune(conn, tune_id)
    assert row is not None
    return dict(row)


def _decisions(app: App, outcome: str) -> list[dict[str, Any]]:
    with app.store.read() as conn:
        rows = pipeline_queries.list_decisions(conn, CONFIG, limit=500)
    return [dict(r["evidence"]) for r in reversed(rows) if r["kind"] == "tune" and r["outcome"] == outcome]


def _pipeline(app: App, key: str) -> dict[str, Any]:
    with app.store.read() as conn:
        row = pipeline_queries.get_pipeline(conn, key)
    assert row is not None
    return dict(row)


def _production(app: App, key: str) -> dict[str, Any]:
    with app.store.read() as conn:
        row = model_queries.production_model(conn, key)
    assert row is not None
    return dict(row)


def _started(app: App, **options: Any) -> tuple[int, Population, list[dict[str, Any]]]:
    tune_id = manager.start(app, CONFIG, **options)
    population = Population(app)
    population.tick()
    return tune_id, population, _trials(app, tune_id)


def test_each_variant_starts_with_proposed_settings_in_its_model_file_and_the_proposal_is_a_decision(
    tuned: App,
) -> None:
    tune_id, _population, trials = _started(tuned, budget_cpu_s=1000.0)
    assert [t["variant"] for t in trials] == [f"{CONFIG}~t{tune_id}v{n}" for n in (1, 2, 3)]
    proposals = _decisions(tuned, "proposed")
    assert [p["variant"] for p in proposals] == [t["variant"] for t in trials]
    for trial, proposal in zip(trials, proposals, strict=True):
        assert trial["status"] == "running" and trial["origin"] == "proposed"
        assert proposal["settings"] == trial["settings"] and proposal["sampler"] == "tpe"
        assert proposal["told_trials"] == 0 and proposal["starts_from"] == "a fresh network"
        production = _production(tuned, trial["variant"])
        assert production["id"] == trial["start_model_id"] == proposal["model_id"]
        model_file = tuned.artifacts.fetch(production["artifact_sha256"])
        assert member_settings(model_file) == trial["settings"]  # the settings travel with the weights
        assert load_model_file(model_file)["shape"]["channels"] == trial["settings"]["channels"]
        assert not _pipeline(tuned, trial["variant"])["paused"]
    assert _decisions(tuned, "started")[0]["variants"] == 3


def test_a_tune_that_cannot_run_is_refused_with_the_reason(tuned: App) -> None:
    manager.start(tuned, CONFIG)
    with pytest.raises(TuneError, match=r"tune 1 of tic_tac_toe_2p is running: stop it first"):
        manager.start(tuned, CONFIG)
    with pytest.raises(TuneError, match="is a tune's variant"):
        manager.start(tuned, f"{CONFIG}~t1v1")
    with pytest.raises(TuneError, match="a population needs 2 to 64 variants, not 1"):
        manager.start(tuned, "connect_four_2p", variants=1)
    with pytest.raises(TuneError, match="a CPU budget must be above 0 seconds"):
        manager.start(tuned, "connect_four_2p", budget_cpu_s=0)


def test_the_budget_is_enforced_every_variant_stops_and_the_best_is_named(tuned: App, clock: FakeClock) -> None:
    tune_id, population, trials = _started(tuned, budget_cpu_s=100.0)
    first, second, third = (t["variant"] for t in trials)
    tuned.models.record_match(
        config_key=first, model_id=trials[0]["start_model_id"], opponent="random", wins=18, draws=0, losses=2,
        elo_diff=0.0, elo_ci=0.0, job_id=None,
    )  # fmt: skip
    finish_job(tuned, first, "selfplay", {"cpu_s": 40.0})
    finish_job(tuned, second, "selfplay", {"cpu_s": 30.0})
    queued = tuned.queue.enqueue("selfplay", third, {"games": 1})
    clock.advance(20)
    assert population.step(tune_id) == []  # 70 of 100 CPU-seconds spent: the tune goes on
    assert _tune(tuned, tune_id)["spent_cpu_s"] == pytest.approx(70.0)
    finish_job(tuned, third, "train", {"cpu_s": 31.0, "loss": 1.0})
    clock.advance(20)
    assert population.step(tune_id) == ["finished"]
    tune = _tune(tuned, tune_id)
    assert tune["status"] == "finished" and "CPU budget 100 s spent (101 s)" in tune["reason"]
    assert all(t["status"] == "ended" for t in _trials(tuned, tune_id))
    assert all(_pipeline(tuned, v)["paused"] for v in (first, second, third))
    assert tuned.queue.get(queued.id).status is JobStatus.CANCELLED
    (finished,) = _decisions(tuned, "finished")
    assert finished["best"]["variant"] == first and finished["spent_cpu_s"] == pytest.approx(101.0)
    assert population.tick() == {}  # a finished tune takes no more steps


def test_a_variant_that_crashes_or_diverges_is_dropped_and_the_others_go_on(tuned: App, clock: FakeClock) -> None:
    tune_id, population, trials = _started(tuned, budget_cpu_s=1000.0)
    crashing, diverging, healthy = (t["variant"] for t in trials)
    for _ in range(2):
        kill_job(tuned, crashing, "CUDA error: an illegal memory access")
    finish_job(tuned, diverging, "train", {"cpu_s": 1.0, "loss": 3.0})
    clock.advance(5)
    assert population.step(tune_id) == []  # two dead jobs and a sane loss: nothing to drop yet
    kill_job(tuned, crashing, "CUDA error: an illegal memory access")
    finish_job(tuned, diverging, "train", {"cpu_s": 1.0, "loss": 480.0})
    waiting = tuned.queue.enqueue("selfplay", diverging, {"games": 1})
    clock.advance(5)
    assert sorted(population.step(tune_id)) == [f"dropped {crashing}", f"dropped {diverging}"]
    by_variant = {t["variant"]: t for t in _trials(tuned, tune_id)}
    assert by_variant[crashing]["status"] == by_variant[diverging]["status"] == "dropped"
    assert by_variant[healthy]["status"] == "running" and not _pipeline(tuned, healthy)["paused"]
    assert _pipeline(tuned, crashing)["paused"] and _pipeline(tuned, diverging)["paused"]
    assert tuned.queue.get(waiting.id).status is JobStatus.CANCELLED
    dropped = {d["variant"]: d for d in _decisions(tuned, "dropped")}
    assert dropped[crashing]["why"] == "3 of its jobs died under these settings"
    assert [d["error"] for d in dropped[crashing]["dead_jobs"]] == ["CUDA error: an illegal memory access"] * 3
    assert dropped[diverging]["why"] == "its training diverged: loss 480.0 (limit 20)"
    assert _tune(tuned, tune_id)["status"] == "running"  # replace_dropped is off here: two fewer, one goes on


def test_a_training_the_workload_stopped_for_a_loss_that_is_not_finite_drops_its_variant_at_once(
    tuned: App, clock: FakeClock
) -> None:
    tune_id, population, trials = _started(tuned, budget_cpu_s=1000.0)
    error = "node w1: training of x diverged: the loss is nan at step 3 (learning rate 50): lower the learning rate"
    kill_job(tuned, trials[1]["variant"], error, job_type="train")
    clock.advance(5)
    assert population.step(tune_id) == [f"dropped {trials[1]['variant']}"]
    assert _decisions(tuned, "dropped")[0]["why"] == "its training diverged"


def test_a_dropped_variant_is_replaced_by_a_fresh_proposal_told_of_the_failure(tuned: App, clock: FakeClock) -> None:
    tuned.settings.tune.replace_dropped = True
    tune_id, population, trials = _started(tuned, budget_cpu_s=1000.0)
    for _ in range(3):
        kill_job(tuned, trials[0]["variant"])
    clock.advance(5)
    assert population.step(tune_id) == [f"dropped {trials[0]['variant']}", f"started {CONFIG}~t{tune_id}v4"]
    proposal = _decisions(tuned, "proposed")[-1]
    assert proposal["variant"] == f"{CONFIG}~t{tune_id}v4" and proposal["told_trials"] == 1


def _rate(app: App, trial: dict[str, Any], wins: int) -> None:
    app.models.record_match(
        config_key=trial["variant"], model_id=trial["start_model_id"], opponent="random", wins=wins, draws=0,
        losses=20 - wins, elo_diff=0.0, elo_ci=0.0, job_id=None,
    )  # fmt: skip


def _ready(app: App, variant: str, rounds: int = 2) -> None:
    with app.store.transaction() as conn:
        for _ in range(rounds):
            pipeline_queries.insert_decision(
                conn, config_key=variant, kind="promotion", outcome="rejected", evidence={}, now=app.clock()
            )


def test_the_weakest_ready_variant_copies_the_strongest_after_its_round_with_perturbed_settings(
    tuned: App, clock: FakeClock
) -> None:
    tune_id, population, trials = _started(tuned, budget_cpu_s=1000.0)
    strong, weak, middle = trials
    _rate(tuned, strong, 19)
    _rate(tuned, weak, 2)
    _rate(tuned, middle, 12)
    _ready(tuned, weak["variant"])
    with tuned.store.transaction() as conn:  # the weak variant is training: its round must end first
        pipeline_queries.update_pipeline(conn, weak["variant"], clock(), stage=Stage.TRAINING.value)
    clock.advance(5)
    assert population.step(tune_id) == []
    assert _pipeline(tuned, weak["variant"])["paused"]  # no new round, no new selfplay until it copies
    assert _tune(tuned, tune_id)["progress"]["pending"][weak["variant"]]["winner_trial"] == strong["id"]
    assert _production(tuned, weak["variant"])["id"] == weak["start_model_id"]
    with tuned.store.transaction() as conn:
        pipeline_queries.update_pipeline(conn, weak["variant"], clock(), stage=Stage.SELFPLAY.value)
    clock.advance(5)
    assert population.step(tune_id) == [f"{weak['variant']} copied trial {strong['id']}"]

    copy = _production(tuned, weak["variant"])
    assert copy["parent_id"] == strong["start_model_id"] and copy["id"] != weak["start_model_id"]
    copied_file = load_model_file(tuned.artifacts.fetch(copy["artifact_sha256"]))
    original = load_model_file(tuned.artifacts.fetch(_production(tuned, strong["variant"])["artifact_sha256"]))
    for name, tensor in original["state_dict"].items():
        assert torch.equal(copied_file["state_dict"][name], tensor)  # the strong one's weights, exactly
    by_id = {t["id"]: t for t in _trials(tuned, tune_id)}
    assert by_id[weak["id"]]["status"] == "ended" and by_id[weak["id"]]["reason"] == f"copied {strong['variant']}"
    (new_trial,) = [t for t in by_id.values() if t["origin"] == "exploited"]
    assert new_trial["variant"] == weak["variant"] and new_trial["parent_id"] == strong["id"]
    assert copied_file["tuned"] == new_trial["settings"]  # the perturbed settings ride in the copy

    (exploited,) = _decisions(tuned, "exploited")
    assert (exploited["loser"]["variant"], exploited["winner"]["variant"]) == (weak["variant"], strong["variant"])
    assert exploited["ranks"] == [3, 1] and exploited["of"] == 3
    assert exploited["loser"]["elo"] < exploited["winner"]["elo"] - 30
    (explored,) = _decisions(tuned, "explored")
    assert explored["from_trial"] == strong["id"] and explored["settings"] == new_trial["settings"]
    for name, change in explored["changes"].items():
        assert change["from"] == strong["settings"][name] and change["to"] == new_trial["settings"][name]
        assert change["how"] in ("x0.8", "x1.25", "resampled")
    unchanged = {k for k in strong["settings"] if k not in explored["changes"]}
    assert all(new_trial["settings"][k] == strong["settings"][k] for k in unchanged)
    assert {"blocks", "channels"} <= unchanged  # the copied weights keep their shape
    assert not _pipeline(tuned, weak["variant"])["paused"]  # released
    assert population.step(tune_id) == []  # the copy is new: not ready, nothing more to do


def test_each_trained_production_plays_the_nearest_variants_under_the_population_key(
    tuned: App, clock: FakeClock
) -> None:
    tune_id, population, trials = _started(tuned, budget_cpu_s=1000.0)
    assert population.step(tune_id) == []  # untrained first networks say nothing: no matches among them
    trained = []
    for trial in trials:  # each variant promotes a trained model (its copy of the first one, for the test)
        start = _production(tuned, trial["variant"])
        model = tuned.models.register_candidate(
            config_key=trial["variant"], artifact_sha256=start["artifact_sha256"], parent_id=start["id"],
            window_sha256=None, job_ids=[], iteration=1,
        )  # fmt: skip
        tuned.models.promote(model.id, reason="test")
        trained.append(model.id)
    clock.advance(5)
    assert population.step(tune_id) == ["3 matches"]
    queued = tuned.queue.list(
        statuses=[JobStatus.QUEUED], job_type=jobs.EVALUATE, config_key=f"{CONFIG}~t{tune_id}", limit=10
    )
    pairs = {frozenset((j.payload["model_id"], j.payload["opponent"])) for j in queued}
    assert pairs == {
        frozenset(p) for p in ((trained[0], trained[1]), (trained[0], trained[2]), (trained[1], trained[2]))
    }
    assert all(j.payload["purpose"] == "tournament" and j.payload["games"] == 20 for j in queued)
    assert population.step(tune_id) == []  # each production plays once


def test_a_tune_whose_step_fails_is_noted_and_the_other_tunes_go_on(tuned: App, clock: FakeClock) -> None:
    broken = manager.start(tuned, CONFIG)
    healthy = manager.start(tuned, "connect_four_2p")
    with tuned.store.transaction() as conn:  # the first tune starts from a model whose file is gone
        queries.update_tune(conn, broken, clock(), progress={"start_from": {"model_id": "gone"}})
        model_queries.insert_model(
            conn,
            {"id": "gone", "config_key": CONFIG, "artifact_sha256": "f" * 64, "parent_id": None, "window_sha256": None,
             "job_ids": [], "stage": "production", "elo": 0.0, "created_at": 0.0, "promoted_at": 0.0, "meta": {}},
        )  # fmt: skip
    done = Population(tuned).tick()
    assert done[broken][0].startswith("failed: ")
    assert "last_error" in _tune(tuned, broken)["progress"]
    assert len(done[healthy]) == 3 and all(d.startswith("started ") for d in done[healthy])


def test_adopting_makes_the_best_variants_model_the_config_keys_production_settings_included(
    tuned: App, clock: FakeClock
) -> None:
    tune_id, _population, trials = _started(tuned, budget_cpu_s=1000.0)
    with pytest.raises(TuneError, match="has no rated variant yet"):
        manager.adopt(tuned, CONFIG)
    _rate(tuned, trials[0], 8)
    _rate(tuned, trials[1], 18)
    clock.advance(5)
    Population(tuned).step(tune_id)
    record = manager.adopt(tuned, CONFIG)
    assert record["variant"] == trials[1]["variant"] and record["settings"] == trials[1]["settings"]
    production = _production(tuned, CONFIG)
    assert production["id"] == record["model_id"] and production["parent_id"] == trials[1]["start_model_id"]
    assert member_settings(tuned.artifacts.fetch(production["artifact_sha256"])) == trials[1]["settings"]
    assert _tune(tuned, tune_id)["adopted_at"] == clock()
    (adopted,) = _decisions(tuned, "adopted")
    assert adopted["model_id"] == production["id"] and adopted["elo"] == record["elo"]
    chosen = manager.adopt(tuned, CONFIG, variant=trials[0]["variant"])  # by hand: another variant
    assert chosen["variant"] == trials[0]["variant"] and _production(tuned, CONFIG)["id"] == chosen["model_id"]
