"""The regression watchdog: it rolls back a production model that clearly loses to its predecessor, and only then."""

from __future__ import annotations

import pytest

from tests.pipeline.test_coordinator import CONFIG, Loop, _play_round
from zeroloop.config import EvaluationSettings, Settings
from zeroloop.pipeline import jobs
from zeroloop.pipeline.registry import ModelStage
from zeroloop.pipeline.stages import Stage
from zeroloop.pipeline.watchdog import judge
from zeroloop.store.database import Store
from zeroloop.store.queries import pipelines as queries

SETTINGS = EvaluationSettings(watchdog_bound_elo=50, watchdog_confidence=0.95, watchdog_min_games=20)


def test_a_clear_loss_to_the_predecessor_rolls_back() -> None:
    verdict = judge(4, 2, 34, SETTINGS)  # score 0.125: about -340 Elo
    assert verdict.roll_back
    assert "more than 50 Elo" in verdict.reason and verdict.evidence["elo_upper"] < -50


@pytest.mark.parametrize(
    ("wins", "draws", "losses", "why"),
    [(17, 4, 19, "not clearly"), (0, 40, 0, "not clearly"), (1, 0, 9, "only 10 games"), (14, 4, 22, "not clearly")],
)
def test_noise_a_draw_or_too_few_games_keep_production(wins: int, draws: int, losses: int, why: str) -> None:
    verdict = judge(wins, draws, losses, SETTINGS)
    assert not verdict.roll_back
    assert why in verdict.reason


@pytest.fixture
def loop(store: Store, settings: Settings) -> Loop:
    settings.pipeline.train_after_samples = 10
    settings.pipeline.window_samples = 15
    settings.pipeline.baselines = ["random"]
    settings.pipeline.eval_games = 10
    settings.pipeline.min_eval_games = 10
    return Loop(store, settings)


def _result(loop: Loop, job_id: int, model_id: str, opponent: str, wins: int, draws: int, losses: int) -> None:
    """An evaluation result outside a round, as a tournament pairing reports it."""
    payload = {
        "job_id": job_id,
        "model_id": model_id,
        "opponent": opponent,
        "wins": wins,
        "draws": draws,
        "losses": losses,
        "elo_diff": 0.0,
        "elo_ci": 100.0,
    }
    loop.feed(loop.event("EVALUATION_RESULT", payload))


def test_the_coordinator_rolls_a_weakened_production_model_back_with_its_evidence(loop: Loop) -> None:
    first = _play_round(loop, 0, wins=10)
    weakened = _play_round(loop, 1, wins=8)  # passed its gate on a short, lucky match
    assert loop.models.get(weakened).stage is ModelStage.PRODUCTION
    with loop.store.read() as conn:
        promoted = dict(queries.list_decisions(conn, CONFIG, limit=1)[0])
    joint = promoted["evidence"]["joint_elo"]
    assert joint[weakened] == pytest.approx(loop.models.get(weakened).elo) and joint[first] is not None
    _result(loop, 9001, weakened, first, 1, 1, 8)  # 18 head-to-head games so far: not yet enough
    assert loop.models.get(weakened).stage is ModelStage.PRODUCTION
    _result(loop, 9002, first, weakened, 18, 2, 0)  # the predecessor's side of a tournament pairing
    assert loop.models.get(weakened).stage is ModelStage.REJECTED
    production = loop.models.production(CONFIG)
    assert production is not None and production.id == first
    with loop.store.read() as conn:
        decision = dict(queries.list_decisions(conn, CONFIG, limit=1)[0])
    assert (decision["kind"], decision["outcome"]) == ("watchdog", "rolled_back")
    evidence = decision["evidence"]
    assert (evidence["model_id"], evidence["restored_model_id"]) == (weakened, first)
    assert (evidence["wins"], evidence["draws"], evidence["losses"]) == (8 + 1 + 0, 0 + 1 + 2, 2 + 8 + 18)
    assert "loses to its predecessor" in evidence["reason"]
    assert loop.published("MODEL_PROMOTED")[-1]["reason"] == "rollback"
    _result(loop, 9003, first, weakened, 10, 0, 0)  # more evidence afterwards changes nothing
    assert loop.coordinator.watchdog.rollbacks == 1


def test_a_candidate_evaluated_against_a_production_model_that_was_rolled_back_is_not_promoted(loop: Loop) -> None:
    first = _play_round(loop, 0, wins=10)
    second = _play_round(loop, 1, wins=8)
    loop.feed(loop.batch("2a" + "0" * 62, 16))
    export = loop.run_job(jobs.EXPORT)
    loop.feed(loop.event("NPZ_EXPORT_COMPLETE", {"job_id": export.id, "window_sha256": "c" * 64, "samples": 16}))
    train = loop.run_job(jobs.TRAIN)
    completed = {"job_id": train.id, "model_id": "x", "artifact_sha256": "02" + "d" * 62, "loss": 1.0, "samples": 16}
    loop.feed(loop.event("TRAINING_COMPLETED", completed))
    assert loop.state()["stage"] == Stage.EVALUATION
    loop.models.rollback(CONFIG)  # by hand, while the candidate plays against `second`
    for _ in range(2):
        evaluate = loop.run_job(jobs.EVALUATE)
        candidate = evaluate.payload["model_id"]
        _result(loop, evaluate.id, candidate, evaluate.payload["opponent"], 10, 0, 0)
    assert loop.models.get(candidate).stage is ModelStage.REJECTED
    production = loop.models.production(CONFIG)
    assert production is not None and production.id == first
    with loop.store.read() as conn:
        decision = dict(queries.list_decisions(conn, CONFIG, limit=1)[0])
    assert "production changed while it was evaluated" in decision["evidence"]["reason"]
    assert decision["evidence"]["evaluated_against"] == second
    assert loop.state()["stage"] == Stage.SELFPLAY
