"""Exploit: which variants copy which, from the population's joint ratings (truncation selection).

Population-based training (Jaderberg et al. 2017) with truncation selection: the rated
variants are ranked by their production model's joint rating; with k = max(1,
floor(n * `exploit_fraction`)) of n, each of the k lowest that is ready (it played
`ready_rounds` rounds under its settings) copies one of the k highest, drawn at random,
if that one is rated at least `exploit_min_gap_elo` above it. A variant never copies
itself, and one in the top k is never a loser. This module is pure: the daemon feeds it
the ratings and records what it picked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Member:
    """One running variant as exploit sees it: its trial, its rating (Elo, standard error) and whether it is ready."""

    variant: str
    trial_id: int
    elo: float
    stderr: float
    ready: bool


@dataclass(frozen=True)
class Exploit:
    """`loser` copies `winner`'s weights and settings; `ranks` are their places (1 = best) among `of` rated."""

    loser: Member
    winner: Member
    ranks: tuple[int, int]
    of: int


def select(members: Sequence[Member], fraction: float, min_gap_elo: float, rng: np.random.Generator) -> list[Exploit]:
    """The exploits of one look at the population (see the module docstring); ties rank by variant name."""
    rated = sorted((m for m in members if math.isfinite(m.elo)), key=lambda m: (-m.elo, m.variant))
    n = len(rated)
    if n < 2:
        return []
    k = max(1, math.floor(n * fraction))
    k = min(k, n // 2)  # the top and bottom never overlap
    top = rated[:k]
    chosen: list[Exploit] = []
    for place in range(n - k, n):
        loser = rated[place]
        if not loser.ready:
            continue
        winner = top[int(rng.integers(len(top)))]
        if winner.elo - loser.elo < min_gap_elo:
            continue
        chosen.append(Exploit(loser, winner, (place + 1, rated.index(winner) + 1), n))
    return chosen
