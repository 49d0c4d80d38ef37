"""The stage machine and the promotion policy on constructed inputs."""

from __future__ import annotations

import random

import pytest

from zeroloop.config import EvaluationSettings, PipelineSettings, baseline_order
from zeroloop.pipeline.promotion import Evidence, Result, decide
from zeroloop.pipeline.stages import Stage, StageError, transition

ORDER = ["random", "mcts"]
BETTER = EvaluationSettings(gate="better")


def test_the_round_goes_through_every_stage_back_to_selfplay() -> None:
    stage = Stage.SELFPLAY
    for target in (Stage.EXPORT, Stage.TRAINING, Stage.EVALUATION, Stage.PROMOTION, Stage.SELFPLAY):
        stage = transition(stage, target)
    assert stage is Stage.SELFPLAY


@pytest.mark.parametrize(
    ("current", "target"),
    [(Stage.SELFPLAY, Stage.TRAINING), (Stage.EXPORT, Stage.PROMOTION), (Stage.PROMOTION, Stage.EVALUATION)],
)
def test_skipping_a_stage_is_refused(current: Stage, target: Stage) -> None:
    with pytest.raises(StageError, match=f"from {current} to {target}"):
        transition(current, target)


@pytest.mark.parametrize("stage", [Stage.EXPORT, Stage.TRAINING, Stage.EVALUATION])
def test_a_failed_stage_returns_to_selfplay(stage: Stage) -> None:
    assert transition(stage, Stage.SELFPLAY) is Stage.SELFPLAY


def test_bounds_tighten_with_games_and_never_collapse() -> None:
    few, many = Result(4, 0, 0), Result(400, 0, 0)
    assert few.bounds(0.9)[0] < many.bounds(0.9)[0] < 1.0
    assert Result(0, 0, 0).bounds(0.9) == (0.0, 1.0)


def test_first_model_is_promoted_only_when_it_clearly_beats_the_weakest_baseline() -> None:
    settings = PipelineSettings()
    strong = Evidence(vs_best=None, vs_baselines={"random": Result(18, 1, 1), "mcts": Result(2, 3, 15)})
    weak = Evidence(vs_best=None, vs_baselines={"random": Result(9, 2, 9)})
    assert decide(settings, strong, ORDER).promote
    assert not decide(settings, weak, ORDER).promote
    assert not decide(settings, Evidence(vs_best=None, vs_baselines={}), ORDER).promote


def test_candidate_that_clearly_beats_the_best_is_promoted() -> None:
    evidence = Evidence(vs_best=Result(28, 4, 8), vs_baselines={})
    decision = decide(PipelineSettings(), evidence, ORDER, BETTER)
    assert decision.promote
    assert "beats the current best" in decision.reason


def test_candidate_within_noise_of_the_best_is_rejected() -> None:
    assert not decide(PipelineSettings(), Evidence(vs_best=Result(21, 0, 19), vs_baselines={}), ORDER, BETTER).promote


def test_too_few_games_never_promote() -> None:
    decision = decide(PipelineSettings(min_eval_games=10), Evidence(vs_best=Result(6, 0, 0), vs_baselines={}), ORDER)
    assert not decision.promote
    assert "only 6 games" in decision.reason


def test_equal_strength_promotes_on_a_clear_gain_against_the_strongest_baseline() -> None:
    drawn = Result(0, 40, 0)
    better = Evidence(
        vs_best=drawn,
        vs_baselines={"mcts": Result(15, 5, 0)},
        best_vs_baselines={"mcts": Result(8, 6, 6)},
    )
    same = Evidence(
        vs_best=drawn,
        vs_baselines={"mcts": Result(8, 6, 6)},
        best_vs_baselines={"mcts": Result(8, 6, 6)},
    )
    assert decide(PipelineSettings(), better, ORDER, BETTER).promote
    assert not decide(PipelineSettings(), same, ORDER, BETTER).promote


def test_cooldown_and_baseline_floor_reject() -> None:
    settings = PipelineSettings(promotion_cooldown_s=600, baseline_floor=0.6)
    recent = Evidence(vs_best=Result(40, 0, 0), vs_baselines={}, last_promotion_at=1000.0, now=1100.0)
    assert "cooldown" in decide(settings, recent, ORDER).reason
    below = Evidence(vs_best=Result(40, 0, 0), vs_baselines={"random": Result(5, 0, 5)}, now=5000.0)
    assert "below" in decide(settings, below, ORDER).reason


# --- the gates against the production model --------------------------------------------------------

NON_INFERIOR = EvaluationSettings(gate="non_inferior", gate_margin_elo=50)
SPRT = EvaluationSettings(gate="sprt", gate_margin_elo=50)


@pytest.mark.parametrize("gate", [NON_INFERIOR, SPRT], ids=["non_inferior", "sprt"])
def test_a_candidate_that_draws_every_game_is_promoted_where_the_better_rule_stalls(gate: EvaluationSettings) -> None:
    drawn = Evidence(vs_best=Result(0, 40, 0), vs_baselines={})
    assert not decide(PipelineSettings(), drawn, ORDER, BETTER).promote
    decision = decide(PipelineSettings(), drawn, ORDER, gate)
    assert decision.promote, decision.reason
    assert "not worse than the best" in decision.reason


@pytest.mark.parametrize("gate", [NON_INFERIOR, SPRT], ids=["non_inferior", "sprt"])
def test_a_clearly_weaker_candidate_fails_the_gate(gate: EvaluationSettings) -> None:
    weaker = Evidence(vs_best=Result(8, 10, 22), vs_baselines={})  # score 0.325: about -127 Elo
    decision = decide(PipelineSettings(), weaker, ORDER, gate)
    assert not decision.promote
    assert "-50" in decision.reason or "50 Elo" in decision.reason


@pytest.mark.parametrize("gate", [NON_INFERIOR, SPRT], ids=["non_inferior", "sprt"])
def test_a_short_drawn_match_is_not_yet_enough(gate: EvaluationSettings) -> None:
    short = Evidence(vs_best=Result(0, 4, 0), vs_baselines={})
    decision = decide(PipelineSettings(min_eval_games=2), short, ORDER, gate)
    assert not decision.promote, decision.reason


def test_the_default_gate_is_non_inferiority() -> None:
    assert EvaluationSettings().gate == "non_inferior"
    decision = decide(PipelineSettings(), Evidence(vs_best=Result(0, 40, 0), vs_baselines={}), ORDER)
    assert decision.promote


@pytest.mark.parametrize(
    ("gate", "drawn", "stronger", "equal"),
    [(NON_INFERIOR, 0.95, 0.9, 0.35), (SPRT, 0.6, 0.35, 0.03)],
    ids=["non_inferior", "sprt"],
)
def test_simulated_matches_pass_stronger_and_drawn_candidates_and_fail_much_weaker_ones(
    gate: EvaluationSettings, drawn: float, stronger: float, equal: float
) -> None:
    """Seeded simulation of 40-game matches: the share of candidates each gate passes, by true strength.

    The SPRT, fixed at 40 games, holds a model 50 Elo worse to 5% and so passes fewer equal ones.
    """
    rng = random.Random(15)

    def match(win: float, draw: float) -> Result:
        wins = draws = 0
        for _ in range(40):
            roll = rng.random()
            wins += roll < win
            draws += win <= roll < win + draw
        return Result(wins, draws, 40 - wins - draws)

    def passes(win: float, draw: float) -> float:
        trials = 200
        evidence = [Evidence(match(win, draw), {}) for _ in range(trials)]
        return sum(decide(PipelineSettings(), e, ORDER, gate).promote for e in evidence) / trials

    assert passes(0.025, 0.95) > drawn  # equal, nearly every game drawn, as in tic-tac-toe
    assert passes(0.40, 0.4) > stronger  # score 0.60: about +70 Elo
    assert passes(0.25, 0.5) >= equal  # equal strength, half the games drawn
    assert passes(0.10, 0.4) < 0.05  # score 0.30: about -150 Elo


def test_without_a_gate_every_candidate_is_promoted_but_the_cooldown_still_holds() -> None:
    ungated = EvaluationSettings(gate="none")
    settings = PipelineSettings(promotion_cooldown_s=60.0)
    weak = Evidence(vs_best=Result(0, 0, 40), vs_baselines={})
    assert decide(settings, weak, ["random", "mcts"], ungated).promote
    first = Evidence(vs_best=None, vs_baselines={})  # no production yet, no baseline played
    assert decide(settings, first, ["random", "mcts"], ungated).promote
    assert not decide(settings, first, ["random", "mcts"], EvaluationSettings()).promote
    soon = Evidence(vs_best=None, vs_baselines={}, last_promotion_at=100.0, now=130.0)
    assert decide(settings, soon, ["random", "mcts"], ungated).reason.startswith("cooldown")


def test_baselines_are_ordered_weakest_first_by_their_simulations() -> None:
    names = ["mctsbot-1000", "mcts", "mctsbot-30", "random", "mctsbot-300"]
    ordered = baseline_order(names, mcts_simulations=100)
    assert ordered == ["random", "mctsbot-30", "mcts", "mctsbot-300", "mctsbot-1000"]
