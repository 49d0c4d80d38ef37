"""Tournaments: round robins of recent models and the baselines, on a schedule, feeding the ratings only."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import FakeClock
from tests.pipeline.test_coordinator import CONFIG, Loop, _play_round
from zeroloop.config import Settings
from zeroloop.events.bus import EventBus
from zeroloop.pipeline import jobs
from zeroloop.pipeline.registry import ModelRegistry, ModelStage
from zeroloop.pipeline.stages import Stage
from zeroloop.pipeline.tournament import TournamentScheduler
from zeroloop.queue.jobs import JobStatus
from zeroloop.queue.manager import JobQueue
from zeroloop.store.database import Store
from zeroloop.store.queries import pipelines as queries
from zeroloop.workload.protocol import Player


class Setup:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.clock = FakeClock()
        self.store = store
        bus = EventBus(store, node="n1", source="test", clock=self.clock)
        self.queue = JobQueue(store, bus, settings, clock=self.clock)
        self.models = ModelRegistry(store, bus, clock=self.clock)
        self.tournaments = TournamentScheduler(store, self.queue, settings, clock=self.clock)
        with store.transaction() as conn:
            queries.ensure_pipeline(conn, CONFIG, self.clock())

    def model(self, iteration: int, stage: ModelStage) -> str:
        model = self.models.register_candidate(
            config_key=CONFIG,
            artifact_sha256=f"{iteration:02d}" + "e" * 62,
            parent_id=None,
            window_sha256=None,
            job_ids=[],
            iteration=iteration,
        )
        self.clock.advance(1)
        if stage is not ModelStage.CANDIDATE:
            self.models.promote(model.id, reason="test")
        if stage is ModelStage.REJECTED:
            self.models.rollback(CONFIG)
        return model.id

    def queued(self) -> list[dict[str, object]]:
        found = self.queue.list(statuses=[JobStatus.QUEUED], job_type=jobs.EVALUATE, config_key=CONFIG, limit=100)
        return [dict(job.payload) for job in found]


@pytest.fixture
def setup(store: Store, settings: Settings) -> Setup:
    settings.evaluation.tournament_interval_s = 600
    settings.evaluation.tournament_models = 3
    settings.evaluation.tournament_games = 12
    return Setup(store, settings)


def test_a_round_robin_of_the_recent_promoted_models_and_the_baselines_is_enqueued_when_due(setup: Setup) -> None:
    assert setup.tournaments.tick() == {}  # no model yet
    oldest = setup.model(1, ModelStage.PRODUCTION)
    assert setup.tournaments.tick() == {}  # one model: nothing to pair it with but baselines it already played
    archived = setup.model(2, ModelStage.PRODUCTION)
    setup.model(3, ModelStage.REJECTED)  # promoted, then rolled back: not a player
    production = setup.model(4, ModelStage.PRODUCTION)
    setup.model(5, ModelStage.CANDIDATE)  # a candidate plays its own round
    newest_three = [production, archived, oldest]
    assert setup.tournaments.tick() == {CONFIG: 3 + 3 * 2}
    pairings = setup.queued()
    assert {(p["model_id"], p["opponent"]) for p in pairings} == {
        (production, archived),
        (production, oldest),
        (archived, oldest),
        *((model, baseline) for model in newest_three for baseline in ("random", "mcts")),
    }
    assert all(p["purpose"] == "tournament" and p["games"] == 12 and p["iteration"] == 1 for p in pairings)
    assert len({p["seed"] for p in pairings}) == len(pairings)  # fresh games per pairing
    with setup.store.read() as conn:
        decision = dict(queries.list_decisions(conn, CONFIG, limit=1)[0])
    assert (decision["kind"], decision["outcome"]) == ("tournament", "scheduled")
    assert decision["evidence"]["players"] == [*newest_three, "random", "mcts"]
    assert setup.tournaments.tick() == {}  # not due yet
    setup.clock.advance(601)
    assert setup.tournaments.tick() == {CONFIG: 9}
    second = [p for p in setup.queued() if p["iteration"] == 2]
    assert len(second) == 9
    assert {p["seed"] for p in second}.isdisjoint({p["seed"] for p in pairings})


def test_nothing_is_scheduled_for_a_paused_pipeline_or_with_tournaments_off(setup: Setup, settings: Settings) -> None:
    setup.model(1, ModelStage.PRODUCTION)
    setup.model(2, ModelStage.PRODUCTION)
    with setup.store.transaction() as conn:
        queries.update_pipeline(conn, CONFIG, setup.clock(), paused=True, pause_reason="by hand")
    assert setup.tournaments.tick() == {}
    with setup.store.transaction() as conn:
        queries.update_pipeline(conn, CONFIG, setup.clock(), paused=False, pause_reason=None)
    settings.evaluation.tournament_interval_s = 0
    off = TournamentScheduler(setup.store, setup.queue, settings, clock=setup.clock)
    assert off.tick() == {}
    assert setup.queued() == []


@pytest.fixture
def loop(store: Store, settings: Settings) -> Loop:
    settings.pipeline.train_after_samples = 10
    settings.pipeline.window_samples = 15
    settings.pipeline.baselines = ["random"]
    settings.pipeline.eval_games = 10
    settings.pipeline.min_eval_games = 10
    settings.evaluation.tournament_interval_s = 600
    return Loop(store, settings)


def test_tournament_results_refit_the_ratings_and_a_dead_pairing_ends_no_round(loop: Loop, settings: Settings) -> None:
    first = _play_round(loop, 0, wins=10)
    second = _play_round(loop, 1, wins=8)
    clock = FakeClock()
    tournaments = TournamentScheduler(loop.store, loop.queue, settings, clock=clock)
    assert tournaments.tick() == {CONFIG: 3}
    clock.advance(601)
    assert tournaments.tick() == {CONFIG: 3}  # tournament 2: its pairings carry iteration 2, like round 2
    loop.feed(loop.batch("2a" + "0" * 62, 16))
    export = loop.run_job(jobs.EXPORT)
    loop.feed(loop.event("NPZ_EXPORT_COMPLETE", {"job_id": export.id, "window_sha256": "c" * 64, "samples": 16}))
    train = loop.run_job(jobs.TRAIN)
    completed = {"job_id": train.id, "model_id": "x", "artifact_sha256": "02" + "d" * 62, "loss": 1.0, "samples": 16}
    loop.feed(loop.event("TRAINING_COMPLETED", completed))
    assert loop.state()["stage"] == Stage.EVALUATION and loop.state()["iteration"] == 2
    pairing = next(
        job
        for job in loop.queue.list(statuses=[JobStatus.QUEUED], job_type=jobs.EVALUATE, config_key=CONFIG, limit=50)
        if job.payload.get("purpose") == "tournament" and job.payload["iteration"] == 2
    )
    loop.feed(loop.event("JOB_DEAD", {"job_id": pairing.id, "job_type": jobs.EVALUATE, "error": "node lost"}))
    assert loop.state()["stage"] == Stage.EVALUATION  # the round goes on
    before = loop.models.get(first).elo
    result = {"job_id": pairing.id + 1000, "model_id": second, "opponent": first, "wins": 6, "draws": 4, "losses": 2}
    loop.feed(loop.event("EVALUATION_RESULT", {**result, "elo_diff": 0.0, "elo_ci": 100.0}))
    assert loop.models.get(first).elo != before  # every rating refitted with the new games
    assert loop.state()["stage"] == Stage.EVALUATION


def test_a_tournament_result_is_not_shown_as_the_last_candidate_result(setup: Setup) -> None:
    from zeroloop.events.bus import Event
    from zeroloop.pipeline.progress import ProgressRecorder

    setup.model(1, ModelStage.PRODUCTION)
    setup.model(2, ModelStage.PRODUCTION)
    setup.tournaments.tick()
    job = setup.queue.list(statuses=[JobStatus.QUEUED], job_type=jobs.EVALUATE, config_key=CONFIG, limit=1)[0]
    recorder = ProgressRecorder(setup.store, clock=setup.clock)
    gate = setup.queue.enqueue(jobs.EVALUATE, CONFIG, {**job.payload, "purpose": "gate", "iteration": 9})
    for event_id, job_id in ((1, job.id), (2, gate.id)):
        payload = {"config_key": CONFIG, "job_id": job_id, "model_id": "m", "opponent": "random"}
        result = {"wins": event_id, "draws": 0, "losses": 0, "elo_diff": 0.0, "elo_ci": 1.0}
        recorder.handle(Event(event_id, "EVALUATION_RESULT", {**payload, **result}, "test", "n1", setup.clock()))
    with setup.store.read() as conn:
        progress = queries.get_pipeline(conn, CONFIG)["progress"]  # type: ignore[index]
    assert progress["last_vs_random"]["wins"] == 2  # the gate's result; the tournament's (1 win) was skipped


class _OpenEvaluation:
    """Circuit breakers whose evaluation circuit is open."""

    def allow(self, key: str) -> bool:
        return "evaluate" not in key


def test_an_open_evaluation_circuit_or_a_deep_evaluation_queue_holds_a_tournament_back(
    setup: Setup, store: Store, settings: Settings
) -> None:
    setup.model(1, ModelStage.PRODUCTION)
    setup.model(2, ModelStage.PRODUCTION)
    held = TournamentScheduler(store, setup.queue, settings, clock=setup.clock, breakers=_OpenEvaluation())  # type: ignore[arg-type]
    assert held.tick() == {}
    bus = EventBus(store, node="n1", source="test", clock=setup.clock)
    # The cluster's evaluation queue is deep (HARD): no tournament adds to it. (A coordinator's own
    # disk says nothing about the workers that would run the games.)
    shallow = settings.model_copy(
        update={"queue": settings.queue.model_copy(update={"soft_limit": 2, "hard_limit": 7})}
    )
    queue = JobQueue(store, bus, shallow, clock=setup.clock)
    backlog = [queue.enqueue("evaluate", "other_2p", {}) for _ in range(5)]
    assert TournamentScheduler(store, queue, shallow, clock=setup.clock).tick() == {}
    assert setup.queued() == []
    for job in backlog:
        queue.cancel(job.id)
    assert setup.tournaments.tick() == {CONFIG: 1 + 2 * 2}  # circuits closed, disk fine: it goes ahead


class _Artifacts:
    def fetch(self, sha256: str) -> Path:
        return Path("/cache") / sha256


def test_a_ladder_of_outside_bots_is_rated_beside_the_models(store: Store, settings: Settings) -> None:
    settings.evaluation.tournament_interval_s = 600
    settings.pipeline.baselines = ["random", "mctsbot-30", "mctsbot-300"]
    setup = Setup(store, settings)
    first, second = setup.model(1, ModelStage.PRODUCTION), setup.model(2, ModelStage.PRODUCTION)
    assert setup.tournaments.tick() == {CONFIG: 1 + 2 * 3}
    against = {(p["model_id"], p["opponent"]): p["opponent_kind"] for p in setup.queued()}
    assert against[(second, "mctsbot-300")] == against[(first, "mctsbot-30")] == "mctsbot"
    assert against[(first, "random")] == "random"
    queued = setup.queue.list(statuses=[JobStatus.QUEUED], job_type=jobs.EVALUATE, config_key=CONFIG, limit=100)
    ladder = next(job for job in queued if job.payload["opponent"] == "mctsbot-300")
    parts = jobs.Parts(_Artifacts(), None, Path("/work"))  # type: ignore[arg-type]
    prepared = jobs.lookup(jobs.EVALUATE).prepare(ladder, jobs.EvaluateJob.model_validate(ladder.payload), parts)
    assert prepared.request.opponent == Player("mctsbot", simulations=300)  # what the workload is asked to play
