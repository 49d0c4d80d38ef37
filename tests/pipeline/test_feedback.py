"""The feedback loops on constructed state: curriculum from Elo velocity, plateau detection, selfplay quality."""

from __future__ import annotations

import itertools

import pytest

from tests.helpers import FakeClock
from zeroloop.config import EvaluationSettings, Settings
from zeroloop.events.bus import EventBus
from zeroloop.pipeline.coordinator import PipelineCoordinator
from zeroloop.pipeline.curriculum import Curriculum, production_rating_at, velocity
from zeroloop.pipeline.quality import SelfplayQualityMonitor, excluded_batches, figures, judge
from zeroloop.pipeline.registry import ModelRegistry
from zeroloop.pipeline.scheduler import ConfigNeed, SelfplayScheduler, weight
from zeroloop.queue.manager import JobQueue
from zeroloop.store.database import Store
from zeroloop.store.queries import artifacts as artifact_queries
from zeroloop.store.queries import models as model_queries
from zeroloop.store.queries import pipelines as queries

FLAT, FAST = "tic_tac_toe_2p", "connect_four_2p"
HOUR = 3600.0


def test_production_rating_follows_the_promotion_timeline_and_velocity_is_per_hour() -> None:
    promoted = [(100.0, 50.0), (200.0, 120.0), (300.0, 110.0)]
    assert production_rating_at(promoted, 50.0) == 0.0  # random play before the first promotion
    assert production_rating_at(promoted, 250.0) == 120.0
    assert production_rating_at(promoted, 1000.0) == 110.0
    assert velocity(promoted, 1000.0, 1000.0) == pytest.approx(110.0 * 3.6)
    assert velocity([], 1000.0, 500.0) == 0.0


def test_the_scheduler_weight_takes_the_curriculum_factor() -> None:
    need = ConfigNeed("a", samples_since_training=1000, since_last_batch_s=0.0, elo_gain_last_hour=50.0)
    flat = ConfigNeed("a", 1000, 0.0, 50.0, factor=0.5)
    assert weight(need, 1000) == 1.5 and weight(flat, 1000) == 0.75


class World:
    """Pipelines with promoted, rated models and promotion decisions, on one fake clock."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.clock = FakeClock(100_000.0)
        self.store = store
        self.settings = settings
        self.bus = EventBus(store, node="n1", source="test", clock=self.clock)
        self.models = ModelRegistry(store, self.bus, clock=self.clock)
        self.iterations = itertools.count(1)
        with store.transaction() as conn:
            for key in (FLAT, FAST):
                queries.ensure_pipeline(conn, key, self.clock())

    def promote(self, key: str, elo: float) -> None:
        """A round: a decision, and a promoted model whose joint rating is `elo`."""
        iteration = next(self.iterations)
        model = self.models.register_candidate(
            config_key=key,
            artifact_sha256=f"{iteration:04d}" + "f" * 60,
            parent_id=None,
            window_sha256=None,
            job_ids=[],
            iteration=iteration,
        )
        self.models.promote(model.id, reason="test")
        with self.store.transaction() as conn:
            model_queries.set_rating(conn, model.id, elo, {"elo": elo, "stderr": 10.0, "games": 40, "opponents": 2})
            queries.insert_decision(
                conn, config_key=key, kind="promotion", outcome="promoted", evidence={}, now=self.clock()
            )

    def decisions(self, key: str, kind: str) -> list[dict[str, object]]:
        with self.store.read() as conn:
            return [dict(row) for row in queries.list_decisions(conn, key, limit=100) if row["kind"] == kind]


@pytest.fixture
def world(store: Store, settings: Settings) -> World:
    settings.evaluation = EvaluationSettings(
        velocity_window_s=HOUR, plateau_window_s=2 * HOUR, plateau_min_gain_elo=25, plateau_min_rounds=3
    )
    return World(store, settings)


def test_a_plateau_is_detected_moves_the_budget_and_clears_when_the_config_gains_again(world: World) -> None:
    world.promote(FLAT, 300.0)
    world.promote(FAST, 100.0)
    for elo, fast_elo in ((310.0, 250.0), (305.0, 400.0), (302.0, 550.0), (312.0, 700.0)):
        world.clock.advance(HOUR / 2)
        world.promote(FLAT, elo)
        world.promote(FAST, fast_elo)
    curriculum = Curriculum(world.store, world.settings, clock=world.clock)
    records = curriculum.tick()
    assert records[FLAT]["plateau"] and records[FLAT]["weight_factor"] == 0.5
    assert not records[FAST]["plateau"] and records[FAST]["velocity_elo_per_h"] == pytest.approx(300.0)
    (detected,) = world.decisions(FLAT, "plateau")
    assert detected["outcome"] == "detected"
    assert detected["evidence"]["rounds"] == 5 and detected["evidence"]["gain_elo"] == pytest.approx(12.0)  # type: ignore[index]
    assert world.decisions(FAST, "plateau") == []
    # The scheduler reads the factor: the flat config gets less of the selfplay budget.
    queue = JobQueue(world.store, world.bus, world.settings, clock=world.clock)
    needs = {
        need.config_key: need
        for need in SelfplayScheduler(world.store, queue, world.settings, clock=world.clock).needs()
    }
    assert needs[FLAT].factor == 0.5 and needs[FAST].factor == 1.0
    assert needs[FAST].elo_gain_last_hour == pytest.approx(300.0)
    # The shares moved on the first look: each config's weight is recorded once with the velocities.
    reweighted = world.decisions(FAST, "curriculum")
    assert len(reweighted) == 1 and reweighted[0]["evidence"]["shares"][FAST] > 0.7  # type: ignore[index]
    assert curriculum.tick()[FLAT]["plateau"]  # still flat: no second decision
    assert len(world.decisions(FLAT, "plateau")) == 1 and len(world.decisions(FAST, "curriculum")) == 1
    world.clock.advance(600)
    world.promote(FLAT, 400.0)
    records = curriculum.tick()
    assert not records[FLAT]["plateau"] and records[FLAT]["weight_factor"] == 1.0
    assert [d["outcome"] for d in world.decisions(FLAT, "plateau")] == ["cleared", "detected"]


def test_too_few_rounds_are_no_plateau(world: World) -> None:
    world.promote(FLAT, 300.0)
    world.clock.advance(HOUR)
    world.promote(FLAT, 301.0)
    assert not Curriculum(world.store, world.settings, clock=world.clock).tick()[FLAT]["plateau"]


# --- selfplay quality ------------------------------------------------------------------------------


def test_figures_pool_batches_and_leave_unrecorded_figures_empty() -> None:
    found = figures([{"games": 10, "positions": 90, "evaluations": 9000}, {"games": 10, "positions": 70}])
    assert found["mean_moves"] == 8.0 and found["games"] == 20
    assert found["draw_rate"] is None and found["policy_entropy"] is None and found["value_mse"] is None
    recorded = figures([{"games": 10, "positions": 50, "draws": 9, "policy_entropy": 0.01, "value_mse": 0.2}])
    assert recorded["draw_rate"] == 0.9 and recorded["policy_entropy"] == 0.01
    warnings = judge(recorded, {"mean_moves": 12.0}, EvaluationSettings(quality_max_draw_rate=0.8))
    assert len(warnings) == 3  # shorter games, draws, a collapsed policy
    assert judge(found, {"mean_moves": 9.0}, EvaluationSettings()) == []


def test_the_monitor_records_each_look_with_its_figures_and_warns_on_a_collapse(world: World) -> None:
    shas = (f"{n:064d}" for n in itertools.count(1))

    def batch(games: int, positions: int) -> None:
        with world.store.transaction() as conn:
            artifact_queries.record_artifact(
                conn,
                {
                    "sha256": next(shas),
                    "kind": "game_batch",
                    "size_bytes": 1,
                    "config_key": FAST,
                    "meta": {"games": games, "positions": positions, "evaluations": positions * 100},
                    "created_at": world.clock(),
                },
            )

    monitor = SelfplayQualityMonitor(world.store, world.settings, clock=world.clock)
    batch(32, 32 * 30)
    batch(32, 32 * 20)
    world.clock.advance(1)
    assert monitor.tick()[FAST]["mean_moves"] == 25.0
    (ok,) = world.decisions(FAST, "quality")
    assert ok["outcome"] == "ok" and "draws not recorded" in ok["evidence"]["reason"]  # type: ignore[index]
    assert FAST not in monitor.tick()  # nothing new: no look recorded
    batch(32, 32 * 8)
    world.clock.advance(1)
    monitor.tick()
    warning = world.decisions(FAST, "quality")[0]
    assert warning["outcome"] == "warning" and "games got shorter" in warning["evidence"]["reason"]  # type: ignore[index]


def test_paused_configs_are_left_alone(world: World) -> None:
    world.promote(FLAT, 300.0)
    with world.store.transaction() as conn:
        queries.update_pipeline(conn, FLAT, world.clock(), paused=True, pause_reason="by hand")
    assert FLAT not in Curriculum(world.store, world.settings, clock=world.clock).tick()
    with world.store.transaction() as conn:
        artifact_queries.record_artifact(
            conn,
            {
                "sha256": "9" * 64,
                "kind": "game_batch",
                "size_bytes": 1,
                "config_key": FLAT,
                "meta": {"games": 4, "positions": 30},
                "created_at": world.clock(),
            },
        )
    assert SelfplayQualityMonitor(world.store, world.settings, clock=world.clock).tick() == {}


def test_a_flagged_batch_is_named_in_the_decision_and_kept_out_of_later_windows(world: World) -> None:
    def batch(sha: str, games: int, positions: int, **counts: float) -> None:
        with world.store.transaction() as conn:
            artifact_queries.record_artifact(
                conn,
                {
                    "sha256": sha,
                    "kind": "game_batch",
                    "size_bytes": 1,
                    "config_key": FAST,
                    "meta": {"games": games, "positions": positions, "samples": positions, **counts},
                    "created_at": world.clock(),
                },
            )
            world.clock.advance(1)

    monitor = SelfplayQualityMonitor(world.store, world.settings, clock=world.clock)
    batch("a" * 64, 32, 32 * 20, distinct_outcomes=3, policy_entropy=1.0)
    monitor.tick()
    batch("b" * 64, 32, 32 * 20, distinct_outcomes=1, policy_entropy=1.0)  # one outcome only
    batch("c" * 64, 32, 32 * 20, distinct_outcomes=3, policy_entropy=0.001)  # collapsed policy
    batch("d" * 64, 32, 32 * 4, distinct_outcomes=3, policy_entropy=1.0)  # degenerate length
    batch("e" * 64, 8, 8 * 20, distinct_outcomes=1, policy_entropy=1.0)  # too few games to judge one outcome
    monitor.tick()
    look = world.decisions(FAST, "quality")[0]
    assert look["outcome"] == "warning"
    flagged = look["evidence"]["excluded_batches"]  # type: ignore[index]
    assert sorted(flagged) == ["b" * 64, "c" * 64, "d" * 64]
    assert "one outcome only" in flagged["b" * 64][0] and "entropy" in flagged["c" * 64][0]
    with world.store.read() as conn:
        excluded = excluded_batches(queries.get_pipeline(conn, FAST)["progress"])
    assert excluded == {"b" * 64, "c" * 64, "d" * 64}
    coordinator = PipelineCoordinator(
        world.store, world.bus, JobQueue(world.store, world.bus, world.settings), world.models, world.settings
    )
    with world.store.read() as conn:
        inputs = coordinator._window_inputs(conn, FAST, 10**6, excluded)
    assert inputs == ["a" * 64, "e" * 64]
