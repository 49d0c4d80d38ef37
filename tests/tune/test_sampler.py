"""Optuna proposes a fresh variant's settings from the trials told so far (TPE or CMA-ES), reproducibly."""

from __future__ import annotations

import math

import pytest

from zeroloop.config import TuneRange
from zeroloop.tune.sampler import Told, propose
from zeroloop.tune.space import Space

SPACE = Space(
    {
        "learning_rate": TuneRange(low=0.001, high=0.1, log=True),
        "simulations": TuneRange(low=8, high=64),
        "gumbel": TuneRange(choices=[False, True]),
    }
)


@pytest.mark.parametrize("sampler", ["tpe", "cmaes"])
def test_a_proposal_lies_in_the_space_and_is_the_same_for_the_same_history_and_seed(sampler: str) -> None:
    told: list[Told] = []
    for number in range(8):
        settings, used = propose(SPACE, told, sampler, seed=number, startup=3)  # type: ignore[arg-type]
        assert used == len(told)
        assert set(settings) == {"learning_rate", "simulations", "gumbel"}
        assert 0.001 <= settings["learning_rate"] <= 0.1 and isinstance(settings["simulations"], int)
        assert isinstance(settings["gumbel"], bool)
        again, _ = propose(SPACE, told, sampler, seed=number, startup=3)  # type: ignore[arg-type]
        assert again == settings
        told.append(Told(settings, -abs(math.log10(float(settings["learning_rate"])) + 2) * 100))


def test_tpe_after_its_random_start_proposes_near_the_best_trials() -> None:
    """With the good trials all at learning rates near 0.01, TPE's next proposals stay near there."""
    told = [Told({"learning_rate": lr, "simulations": 32, "gumbel": False}, -abs(math.log10(lr) + 2) * 100)
            for lr in (0.001, 0.002, 0.005, 0.008, 0.01, 0.012, 0.02, 0.05, 0.08, 0.1)]  # fmt: skip
    proposals = [propose(SPACE, told, "tpe", seed=seed, startup=5)[0]["learning_rate"] for seed in range(12)]
    near = [lr for lr in proposals if 0.004 <= float(lr) <= 0.025]
    assert len(near) >= 8, proposals  # a uniform draw on the log scale lands there about 4 times in 12


def test_failed_trials_are_told_and_trials_outside_the_space_are_left_out() -> None:
    told = [
        Told({"learning_rate": 0.01, "simulations": 16, "gumbel": True}, None),  # dropped: failed
        Told({"learning_rate": 0.5, "simulations": 16, "gumbel": True}, 10.0),  # outside the range now
        Told({"learning_rate": 0.01, "simulations": 16}, 10.0),  # a parameter missing
        Told({"learning_rate": 0.02, "simulations": 24, "gumbel": False}, 30.0),
    ]
    _settings, used = propose(SPACE, told, "tpe", seed=1, startup=2)
    assert used == 2
