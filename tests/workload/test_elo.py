"""Elo, confidence interval and SPRT arithmetic on constructed results."""

from __future__ import annotations

import math

import pytest

from zeroloop.workload.elo import (
    Decision,
    elo_estimate,
    elo_from_score,
    score_from_elo,
    sprt_bounds,
    sprt_decision,
    sprt_llr,
)


def test_elo_and_score_are_inverse() -> None:
    assert elo_from_score(0.5) == pytest.approx(0.0)
    assert elo_from_score(0.75) == pytest.approx(190.85, abs=0.01)
    for elo in (-300.0, -35.0, 0.0, 120.0):
        assert elo_from_score(score_from_elo(elo)) == pytest.approx(elo)


def test_interval_contains_estimate_and_narrows_with_games() -> None:
    small = elo_estimate(6, 2, 2, 0.95)
    large = elo_estimate(60, 20, 20, 0.95)
    assert small.elo == pytest.approx(large.elo)
    assert small.low < small.elo < small.high
    assert large.high - large.low < small.high - small.low
    assert small.score == pytest.approx(0.7)


def test_even_match_is_centred_on_zero() -> None:
    estimate = elo_estimate(10, 0, 10, 0.95)
    assert estimate.elo == pytest.approx(0.0)
    assert estimate.low == pytest.approx(-estimate.high)


def test_one_sided_result_keeps_a_finite_interval() -> None:
    estimate = elo_estimate(5, 0, 0, 0.95)
    assert math.isfinite(estimate.low) and estimate.low > 0


def test_sprt_bounds_follow_alpha_beta() -> None:
    lower, upper = sprt_bounds(0.05, 0.05)
    assert lower == pytest.approx(math.log(0.05 / 0.95))
    assert upper == pytest.approx(math.log(0.95 / 0.05))


def test_sprt_decides_clear_results_and_waits_on_small_ones() -> None:
    assert sprt_decision(sprt_llr(90, 5, 5, 0.0, 35.0), 0.05, 0.05) is Decision.ACCEPT_H1
    assert sprt_decision(sprt_llr(40, 20, 140, 0.0, 35.0), 0.05, 0.05) is Decision.ACCEPT_H0
    assert sprt_decision(sprt_llr(3, 0, 2, 0.0, 35.0), 0.05, 0.05) is Decision.CONTINUE
    assert sprt_decision(sprt_llr(2, 0, 0, 0.0, 35.0), 0.05, 0.05) is Decision.CONTINUE
    assert sprt_llr(0, 0, 0, 0.0, 35.0) == 0.0


def test_llr_sign_follows_which_hypothesis_fits() -> None:
    assert sprt_llr(60, 0, 40, 0.0, 35.0) > 0
    assert sprt_llr(40, 0, 60, 0.0, 35.0) < 0
