"""Gumbel AlphaZero's root search (Danihelka et al., "Policy improvement by planning with Gumbel", 2022).

At the root, instead of PUCT: draw a Gumbel variable g(a) per legal action, consider the
`considered` actions with the highest g(a) + logit(a) (sampling without replacement),
and share the simulations among them by sequential halving: each phase visits every
remaining action equally, then keeps the better half by g(a) + logit(a) + sigma(q(a)).
The action played is the last one standing. The policy target is
softmax(logit + sigma(completed Q)), where an unvisited action's Q is completed with a
mix of the network's value and the visited actions' values, so the target improves on
the prior even when few actions were visited. Below the root the search stays PUCT.

sigma(q) = (c_visit + max visits) * c_scale * q, with q rescaled to [0, 1] over the
root's legal actions, as in DeepMind's mctx.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from zeroloop.workload.games import FloatArray
from zeroloop.workload.tree import SearchTree

_TINY = 1e-8


@dataclass(frozen=True)
class GumbelConfig:
    """Actions considered at the root (at most), and the sigma constants c_visit and c_scale."""

    considered: int = 16
    c_visit: float = 50.0
    c_scale: float = 0.1


def completed_q(tree: SearchTree) -> FloatArray:
    """Root Q for the mover over all actions; unvisited actions get the mixed value (illegal ones too)."""
    visits = tree.visits[0].astype(np.float64)
    prior = np.maximum(tree.prior[0].astype(np.float64), _TINY)
    q = tree.root_q().astype(np.float64)
    seen = visits > 0
    total = visits.sum()
    if seen.any():
        weighted = float((prior[seen] * q[seen]).sum() / prior[seen].sum())
        mixed = (float(tree.node_value[0]) + total * weighted) / (total + 1.0)
    else:
        mixed = float(tree.node_value[0])
    return np.where(seen, q, mixed).astype(np.float32)


def sigma(tree: SearchTree, config: GumbelConfig) -> FloatArray:
    """The monotone transform of completed Q that is added to logits (zero for illegal actions)."""
    legal = tree.penalty[0] == 0.0
    q = completed_q(tree)
    low, high = float(q[legal].min()), float(q[legal].max())
    scaled = (q - low) / max(high - low, _TINY)
    scale = (config.c_visit + float(tree.visits[0].max())) * config.c_scale
    return np.where(legal, scale * scaled, 0.0).astype(np.float32)


def log_prior(tree: SearchTree) -> FloatArray:
    """Root logits (log prior); -inf-like for illegal actions."""
    logits: FloatArray = (np.log(np.maximum(tree.prior[0], _TINY)) + tree.penalty[0]).astype(np.float32)
    return logits


def improved_policy(tree: SearchTree, config: GumbelConfig) -> FloatArray:
    """softmax(logit + sigma(completed Q)) over the root's legal actions: the Gumbel policy target."""
    scores = log_prior(tree) + sigma(tree, config)
    scores = scores - scores.max()
    weights = np.where(tree.penalty[0] == 0.0, np.exp(scores), 0.0)
    policy: FloatArray = (weights / weights.sum()).astype(np.float32)
    return policy


class Halving:
    """The root schedule of one search: which action each root visit goes to, phase by phase."""

    def __init__(self, tree: SearchTree, gumbel: FloatArray, simulations: int, config: GumbelConfig) -> None:
        self.config = config
        self.scores = log_prior(tree) + gumbel
        legal = np.flatnonzero(tree.penalty[0] == 0.0)
        count = max(1, min(config.considered, len(legal), simulations))
        ranked = legal[np.argsort(-self.scores[legal], kind="stable")]
        self.remaining: list[int] = [int(a) for a in ranked[:count]]
        self.phases = max(1, math.ceil(math.log2(count)))
        self.simulations = simulations
        self.queue: list[int] = []
        self.started = False

    def next_action(self, tree: SearchTree) -> int:
        """The root action of the next simulation; halves the candidates when a phase is spent."""
        if not self.queue:
            if self.started and len(self.remaining) > 1:
                self.remaining = self._ranked(tree)[: math.ceil(len(self.remaining) / 2)]
            self.started = True
            per_action = max(1, self.simulations // (self.phases * len(self.remaining)))
            self.queue = [a for _ in range(per_action) for a in reversed(self.remaining)]
        return self.queue.pop()

    def best(self, tree: SearchTree) -> int:
        """The action to play: the best remaining candidate by g + logit + sigma(Q)."""
        return self._ranked(tree)[0]

    def _ranked(self, tree: SearchTree) -> list[int]:
        total = self.scores + sigma(tree, self.config)
        return sorted(self.remaining, key=lambda a: -float(total[a]))
