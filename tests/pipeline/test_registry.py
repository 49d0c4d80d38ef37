"""The model registry on both backends: lineage, promotion exactly once, rollback, Elo."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from zeroloop.errors import LeaseError
from zeroloop.events.bus import EventBus
from zeroloop.pipeline.bradley_terry import Pairing, fit
from zeroloop.pipeline.registry import ModelRegistry, ModelStage, RegistryError
from zeroloop.store.database import Store
from zeroloop.store.schema import events, pipelines
from zeroloop.workload.elo import elo_from_score


def _registry(store: Store) -> ModelRegistry:
    ticks = iter(range(1000, 100000))
    return ModelRegistry(store, EventBus(store, node="n1", source="test"), clock=lambda: float(next(ticks)))


def _candidate(registry: ModelRegistry, iteration: int, parent: str | None = None) -> str:
    sha = f"{iteration:02d}" + "a" * 62
    return registry.register_candidate(
        config_key="tic_tac_toe_2p",
        artifact_sha256=sha,
        parent_id=parent,
        window_sha256="b" * 64,
        job_ids=[iteration],
        iteration=iteration,
    ).id


def _promotions(store: Store) -> list[dict[str, object]]:
    with store.read() as conn:
        query = sa.select(events.c.payload).where(events.c.type == "MODEL_PROMOTED").order_by(events.c.id)
        return list(conn.execute(query).scalars())


def test_candidate_records_lineage_and_registers_once(store: Store) -> None:
    registry = _registry(store)
    first = _candidate(registry, 1)
    assert _candidate(registry, 1) == first
    child = registry.get(_candidate(registry, 2, parent=first))
    assert (child.parent_id, child.window_sha256, child.job_ids) == (first, "b" * 64, [2])
    assert child.stage is ModelStage.CANDIDATE
    assert [model.id for model in registry.list_models("tic_tac_toe_2p")] == [child.id, first]


def test_promotion_happens_once_and_archives_the_former_model(store: Store) -> None:
    registry = _registry(store)
    first, second = _candidate(registry, 1), _candidate(registry, 2)
    assert registry.promote(first, reason="test")
    assert not registry.promote(first, reason="test")
    assert registry.promote(second, reason="test")
    assert registry.get(first).stage is ModelStage.ARCHIVED
    production = registry.production("tic_tac_toe_2p")
    assert production is not None
    assert production.id == second
    assert [event["model_id"] for event in _promotions(store)] == [first, second]
    with store.read() as conn:
        assert conn.execute(sa.select(pipelines.c.current_model_id)).scalar_one() == second


def test_rejected_model_is_not_promoted_automatically(store: Store) -> None:
    registry = _registry(store)
    model = _candidate(registry, 1)
    registry.reject(model, reason="weak")
    with pytest.raises(RegistryError, match="rejected"):
        registry.promote(model, reason="policy")
    assert registry.promote(model, reason="manual")


def test_rollback_restores_the_previous_production_model(store: Store) -> None:
    registry = _registry(store)
    first, second = _candidate(registry, 1), _candidate(registry, 2)
    registry.promote(first, reason="test")
    with pytest.raises(RegistryError, match="no earlier production"):
        registry.rollback("tic_tac_toe_2p")
    registry.promote(second, reason="test")
    restored = registry.rollback("tic_tac_toe_2p")
    assert restored.id == first
    assert restored.stage is ModelStage.PRODUCTION
    assert registry.get(second).stage is ModelStage.REJECTED
    assert _promotions(store)[-1]["reason"] == "rollback"


def test_a_failing_guard_refuses_the_promotion_and_changes_nothing(store: Store) -> None:
    registry = _registry(store)
    model = _candidate(registry, 1)

    def stale(conn: Connection) -> None:
        raise LeaseError("promotion lease token 3 is stale")

    with pytest.raises(LeaseError):
        registry.promote(model, reason="test", guard=stale)
    assert registry.get(model).stage is ModelStage.CANDIDATE
    assert _promotions(store) == []


def test_matches_rate_every_model_jointly_once_per_job(store: Store) -> None:
    registry = _registry(store)
    first = _candidate(registry, 1)
    kwargs = {"config_key": "tic_tac_toe_2p", "draws": 0, "elo_ci": 50.0, "elo_diff": 9999.0}
    assert registry.record_match(model_id=first, opponent="random", wins=9, losses=1, job_id=7, **kwargs)
    assert registry.record_match(model_id=first, opponent="random", wins=9, losses=1, job_id=7, **kwargs) is None
    first_elo = elo_from_score(9.5 / 11)
    assert registry.get(first).elo == pytest.approx(first_elo)
    registry.record_match(model_id=first, opponent="mcts", wins=0, losses=10, job_id=9, **kwargs)
    assert registry.get(first).elo == pytest.approx(first_elo)  # the MCTS player's own rating absorbs this match
    second = _candidate(registry, 2, parent=first)
    assert registry.get(second).elo == pytest.approx(first_elo)  # a candidate starts at its parent's rating
    registry.record_match(model_id=second, opponent=first, wins=6, losses=4, job_id=8, **kwargs)
    registry.record_match(model_id=second, opponent="random", wins=10, losses=0, job_id=10, **kwargs)
    pairings = [
        Pairing(first, "random", 9, 0, 1),
        Pairing(first, "mcts", 0, 0, 10),
        Pairing(second, first, 6, 0, 4),
        Pairing(second, "random", 10, 0, 0),
    ]
    expected = fit(pairings, {"random": 0.0}).ratings
    for model_id in (first, second):
        model = registry.get(model_id)
        assert model.elo == pytest.approx(expected[model_id].elo)
        assert model.meta["rating"]["stderr"] == pytest.approx(expected[model_id].stderr)
    assert registry.get(first).elo != pytest.approx(first_elo)  # the child's results moved its parent
    assert len(registry.matches(first)) == 2
