"""Explore: how a copied variant's settings are perturbed, as zeroloop.tune.space documents it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zeroloop.config import ConfigError, TuneRange, TuneSettings
from zeroloop.tune.space import Space

SPACE = Space(
    {
        "learning_rate": TuneRange(low=0.001, high=0.1, log=True),
        "train_steps": TuneRange(low=50, high=800),
        "temperature_moves": TuneRange(low=1, high=3),
        "gumbel": TuneRange(choices=[False, True]),
        "blocks": TuneRange(choices=[1, 2, 3]),
    }
)
SETTINGS = {"learning_rate": 0.01, "train_steps": 400, "temperature_moves": 2, "gumbel": False, "blocks": 2}


def test_a_range_setting_is_multiplied_by_one_of_the_factors_and_the_shape_never_moves() -> None:
    seen: set[str] = set()
    for seed in range(200):
        new, changes = SPACE.perturb(SETTINGS, np.random.default_rng(seed), (0.8, 1.25), 0.0)
        assert new["blocks"] == 2 and "blocks" not in changes  # the copied weights fix the shape
        assert new["gumbel"] is False  # no resampling asked: a choice stays
        ratio = new["learning_rate"] / SETTINGS["learning_rate"]
        assert math.isclose(ratio, 0.8) or math.isclose(ratio, 1.25)
        assert new["train_steps"] in (320, 500) and isinstance(new["train_steps"], int)
        seen.add(changes["learning_rate"]["how"])
        assert changes["learning_rate"] == {
            "from": 0.01,
            "to": new["learning_rate"],
            "how": changes["learning_rate"]["how"],
        }
    assert seen == {"x0.8", "x1.25"}


def test_a_small_integer_moves_by_one_when_rounding_would_keep_it_and_stays_in_range() -> None:
    moved = set()
    for seed in range(100):
        new, _changes = SPACE.perturb(SETTINGS, np.random.default_rng(seed), (0.8, 1.25), 0.0)
        moved.add(new["temperature_moves"])  # 2 x 0.8 and 2 x 1.25 both round to 2
    assert moved == {1, 3}
    new, _ = SPACE.perturb({**SETTINGS, "learning_rate": 0.095}, np.random.default_rng(1), (2.0, 2.0), 0.0)
    assert new["learning_rate"] == 0.1  # clamped to the range


def test_resampling_draws_choices_anew_and_ranges_within_bounds() -> None:
    flips = 0
    for seed in range(50):
        new, changes = SPACE.perturb(SETTINGS, np.random.default_rng(seed), (0.8, 1.25), 1.0)
        assert 0.001 <= new["learning_rate"] <= 0.1 and 50 <= new["train_steps"] <= 800
        assert changes["gumbel"] == {"from": False, "to": True, "how": "resampled"}
        flips += new["gumbel"] is True
    assert flips == 50


def test_the_shape_is_left_out_of_a_space_whose_variants_start_from_one_model() -> None:
    assert "blocks" in Space.of(TuneSettings()).ranges
    fixed = Space.of(TuneSettings(), fixed_shape=True)
    assert "blocks" not in fixed.ranges and "channels" not in fixed.ranges and "learning_rate" in fixed.ranges
    assert Space.from_record(fixed.record()) == fixed


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"eval_simulations": {"low": 10, "high": 20}}, "'eval_simulations' is no parameter a tune can vary"),
        ({"learning_rate": {"low": 0, "high": 1}}, "learning_rate: 0.0 is not a valid value"),
        ({"gumbel": {"choices": [0, 1]}}, "gumbel: 0 is not a valid value"),
        ({"train_steps": {"low": 10.5, "high": 20}}, "train_steps: 10.5 is not a valid value"),
        ({"simulations": {"low": 20, "high": 10}}, "a range needs low below high"),
        ({"c_puct": {"low": 0, "high": 2, "log": True}}, "a log range needs low above 0"),
        ({"simulations": {"low": 2, "high": 9, "choices": [3]}}, "give either low and high, or choices"),
    ],
)
def test_a_space_the_workload_would_refuse_is_refused_when_the_settings_are_read(
    space: dict[str, dict[str, object]], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        TuneSettings(space=space)  # type: ignore[arg-type]
