"""Exploit on simulated ratings: truncation selection picks and perturbs as zeroloop.tune.pbt documents."""

from __future__ import annotations

import math

import numpy as np

from zeroloop.config import TuneRange
from zeroloop.tune.pbt import Member, select
from zeroloop.tune.space import Space


def _members(elos: list[float], ready: bool = True) -> list[Member]:
    return [Member(f"v{i}", i, elo, 20.0, ready) for i, elo in enumerate(elos)]


def test_the_weakest_quarter_copies_one_of_the_strongest_quarter() -> None:
    members = _members([400, 100, 350, 0, 250, 300, 50, 200])  # 8 variants: k = 2
    winners = set()
    for seed in range(40):
        chosen = select(members, 0.25, 30.0, np.random.default_rng(seed))
        assert sorted(c.loser.variant for c in chosen) == ["v3", "v6"]  # elo 0 and 50, ranks 8 and 7
        assert all(c.winner.variant in ("v0", "v2") for c in chosen)  # elo 400 and 350
        assert {c.ranks[0] for c in chosen} == {7, 8} and all(c.of == 8 for c in chosen)
        winners |= {c.winner.variant for c in chosen}
    assert winners == {"v0", "v2"}  # drawn at random among the top


def test_nobody_copies_below_the_gap_or_before_it_is_ready_or_while_unrated() -> None:
    rng = np.random.default_rng(0)
    assert select(_members([100, 90, 80, 75]), 0.25, 30.0, rng) == []  # 25 Elo apart: within the gap
    assert select(_members([400, 0, 300, 200], ready=False), 0.25, 30.0, rng) == []
    unrated = [*_members([400, 0]), Member("new", 9, math.nan, math.inf, True)]
    (only,) = select(unrated, 0.5, 30.0, rng)
    assert (only.loser.variant, only.winner.variant, only.of) == ("v1", "v0", 2)  # the unrated one is left alone
    assert select(_members([100]), 0.5, 0.0, rng) == []


def test_a_population_on_simulated_ratings_climbs_towards_the_best_settings() -> None:
    """Twelve generations of exploit and explore on a made-up landscape (best learning rate 0.01, Elo 0 there)."""
    space = Space({"learning_rate": TuneRange(low=0.0005, high=0.5, log=True)})
    rng = np.random.default_rng(7)

    def rating(lr: float) -> float:
        return -400.0 * (math.log10(lr) - math.log10(0.01)) ** 2

    population = [{"learning_rate": lr} for lr in (0.0006, 0.0008, 0.3, 0.45, 0.001, 0.2)]
    start = max(rating(p["learning_rate"]) for p in population)
    for _generation in range(12):
        members = [Member(str(i), i, rating(p["learning_rate"]), 10.0, True) for i, p in enumerate(population)]
        for choice in select(members, 0.34, 1.0, rng):
            copied = population[choice.winner.trial_id]
            population[choice.loser.trial_id], _ = space.perturb(copied, rng, (0.8, 1.25), 0.0)
    best = max(rating(p["learning_rate"]) for p in population)
    assert start < -150 and best > -40  # from 3x off the best rate to within about 1.6x of it
