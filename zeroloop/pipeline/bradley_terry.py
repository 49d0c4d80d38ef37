"""One joint rating: a Bradley-Terry maximum-likelihood fit of every player from every match.

Players are model ids and baselines. Each recorded match is a pairwise tally (wins,
draws, losses from the first player's side); tallies of the same two players are pooled.
The model is Elo's: player i scores against j with probability

    p_ij = 1 / (1 + 10 ** (-(r_i - r_j) / 400))        (r: Elo points)

and a draw counts as half a win and half a loss. Every pair that met gets
`prior_games` virtual games scored 1/2 (a draw), so a clean sweep rates finitely: with
one pair and the default prior the fit is exactly the Elo of the score (w + d/2 + 1/2) /
(n + 1), the number the former one-match rating gave.

Anchors (random play = 0) are fixed; the other ratings maximise the likelihood by
Newton's method. A player in a group of players that no match chain connects to an
anchor cannot be placed on the scale and is left out (read as "not rated").

Intervals: the Fisher information I (the match graph's Laplacian weighted by
n_ij p_ij (1 - p_ij)) would assume every game is a coin toss with p_ij; draws make games
far less variable than that, so the covariance is the sandwich I^-1 J I^-1, with J the
same Laplacian weighted by the observed squared deviation of the game scores from the
fitted p_ij. It stays honest when draws are common (tic-tac-toe) and when the model
fits badly; tests/pipeline/test_bradley_terry.py checks its coverage on simulated
tournaments.

numpy does the algebra: this module is imported where ratings are fitted (the registry,
on recording a match; the benchmark), never by the screens, which read stored ratings.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from zeroloop.errors import RegistryError

ELO_PER_LOGIT = 400.0 / math.log(10.0)
MAX_STEP_LOGIT = 2.0  # largest Newton step per iteration (natural logits): keeps a bad start from overshooting
TOLERANCE_LOGIT = 1e-9
MAX_ITERATIONS = 100


@dataclass(frozen=True)
class Pairing:
    """A match result of `a` against `b`, from `a`'s side (games; fractions allowed)."""

    a: str
    b: str
    wins: float
    draws: float
    losses: float


@dataclass(frozen=True)
class Estimate:
    """A player's fitted rating (Elo points on the anchored scale), its standard error, and the games behind it."""

    elo: float
    stderr: float
    games: float
    opponents: int

    def half_width(self, confidence: float) -> float:
        """Half-width of the two-sided interval at `confidence` (Elo points); 0 for an anchor."""
        return _z(confidence) * self.stderr


@dataclass(frozen=True)
class Fit:
    """The outcome of a fit: every rated player's estimate, and the Newton iterations it took."""

    ratings: dict[str, Estimate]
    iterations: int


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def _pool(pairings: Iterable[Pairing]) -> dict[tuple[str, str], list[float]]:
    """Tallies per unordered pair, keyed (lower name, higher name), as [wins, draws, losses] of the lower."""
    pooled: dict[tuple[str, str], list[float]] = {}
    for p in pairings:
        if p.a == p.b:
            continue  # a player against itself says nothing about its rating
        if min(p.wins, p.draws, p.losses) < 0:
            raise RegistryError(f"match of {p.a} against {p.b} has a negative count: record results, not corrections")
        key, own = ((p.a, p.b), (p.wins, p.draws, p.losses)) if p.a < p.b else ((p.b, p.a), (p.losses, p.draws, p.wins))
        tally = pooled.setdefault(key, [0.0, 0.0, 0.0])
        for index, value in enumerate(own):
            tally[index] += value
    return {key: tally for key, tally in pooled.items() if sum(tally) > 0}


def _anchored_component(pairs: Iterable[tuple[str, str]], anchors: Mapping[str, float]) -> set[str]:
    """The players that some chain of matches connects to an anchor."""
    neighbours: dict[str, set[str]] = {}
    for a, b in pairs:
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    reached = {name for name in anchors if name in neighbours}
    frontier = list(reached)
    while frontier:
        for other in neighbours[frontier.pop()]:
            if other not in reached:
                reached.add(other)
                frontier.append(other)
    return reached


def fit(
    pairings: Iterable[Pairing],
    anchors: Mapping[str, float],
    *,
    prior_games: float = 1.0,
    start: Mapping[str, float] | None = None,
) -> Fit:
    """Fit every player connected to an anchor; `anchors` and `start` map names to Elo points.

    `start` (e.g. the ratings stored by the last fit) only speeds the fit up.
    """
    pooled = _pool(pairings)
    rated = _anchored_component(pooled, anchors)
    free = sorted(name for name in rated if name not in anchors)
    index = {name: i for i, name in enumerate(free)}
    edges = [(a, b, tally) for (a, b), tally in pooled.items() if a in rated and b in rated]
    theta = {name: anchors[name] / ELO_PER_LOGIT for name in rated if name in anchors}
    for name in free:
        theta[name] = (start or {}).get(name, 0.0) / ELO_PER_LOGIT
    size = len(free)
    iterations = 0
    information = np.zeros((size, size))
    for iterations in range(1, MAX_ITERATIONS + 1):  # noqa: B007 - the count is reported
        gradient = np.zeros(size)
        information = np.zeros((size, size))
        for a, b, (wins, draws, losses) in edges:
            games = wins + draws + losses + prior_games
            score = wins + 0.5 * draws + 0.5 * prior_games
            p = 1.0 / (1.0 + math.exp(theta[b] - theta[a]))
            weight = games * p * (1.0 - p)
            _accumulate(information, index, a, b, weight)
            if a in index:
                gradient[index[a]] += score - games * p
            if b in index:
                gradient[index[b]] -= score - games * p
        if size == 0:
            break
        step = np.linalg.solve(information, gradient)
        largest = float(np.max(np.abs(step)))
        if largest > MAX_STEP_LOGIT:
            step *= MAX_STEP_LOGIT / largest
        for name, i in index.items():
            theta[name] += float(step[i])
        if largest < TOLERANCE_LOGIT:
            break
    covariance = _sandwich(information, edges, theta, index, prior_games) if size else np.zeros((0, 0))
    games_of: dict[str, float] = dict.fromkeys(rated, 0.0)
    opponents_of: dict[str, int] = dict.fromkeys(rated, 0)
    for a, b, tally in edges:
        for name in (a, b):
            games_of[name] += sum(tally)
            opponents_of[name] += 1
    ratings = {}
    for name in rated:
        stderr = (
            math.sqrt(max(0.0, float(covariance[index[name], index[name]]))) * ELO_PER_LOGIT if name in index else 0.0
        )
        ratings[name] = Estimate(theta[name] * ELO_PER_LOGIT, stderr, games_of[name], opponents_of[name])
    return Fit(ratings, iterations)


def _accumulate(matrix: np.ndarray, index: Mapping[str, int], a: str, b: str, weight: float) -> None:
    """Add one pair's `weight` to a Laplacian restricted to the free players."""
    i, j = index.get(a), index.get(b)
    if i is not None:
        matrix[i, i] += weight
    if j is not None:
        matrix[j, j] += weight
    if i is not None and j is not None:
        matrix[i, j] -= weight
        matrix[j, i] -= weight


def _sandwich(
    information: np.ndarray,
    edges: list[tuple[str, str, list[float]]],
    theta: Mapping[str, float],
    index: Mapping[str, int],
    prior_games: float,
) -> np.ndarray:
    """The robust covariance I^-1 J I^-1 of the free players' ratings (natural logits squared)."""
    spread = np.zeros_like(information)
    for a, b, (wins, draws, losses) in edges:
        p = 1.0 / (1.0 + math.exp(theta[b] - theta[a]))
        half = prior_games / 2.0
        squares = (wins + half) * (1.0 - p) ** 2 + draws * (0.5 - p) ** 2 + (losses + half) * p**2
        _accumulate(spread, index, a, b, squares)
    inverse = np.linalg.inv(information)
    covariance: np.ndarray = inverse @ spread @ inverse
    return covariance
