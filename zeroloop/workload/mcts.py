"""Monte Carlo tree search over many games in lockstep, with leaves evaluated in one batch.

Each root gets its own tree (`tree.SearchTree`, numpy arrays: one row per node, one
column per action), searched by PUCT or with a Gumbel root (`gumbel.py`). Every step
walks each tree from its root to one unexpanded leaf, then all leaves of all trees go to
the evaluator together, so network inference runs at a batch size equal to the number of
games searched at once. Terminal leaves are scored from the game's returns without the
evaluator.

Any number of players: a leaf's value is a vector with one entry per player, and every
edge on the path adds the entry of the player who chose that edge, so each node's value is
seen from the perspective of the player who moved into it (the max-n backup; for two
zero-sum players it is the usual negamax).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from zeroloop.errors import WorkloadError
from zeroloop.workload.games import BoolArray, FloatArray, Game, State, to_mover_frame
from zeroloop.workload.gumbel import GumbelConfig, Halving, improved_policy
from zeroloop.workload.tree import SearchTree


class SearchGame(Protocol):
    """What the search needs of a game; `games.Game` provides it (tests use toy games too)."""

    num_actions: int
    num_players: int
    max_length: int

    def is_terminal(self, state: State) -> bool:
        """Whether the game in `state` is over."""
        ...

    def to_play(self, state: State) -> int:
        """The player to move."""
        ...

    def legal_actions(self, state: State) -> list[int]:
        """The legal actions, ascending."""
        ...

    def legal_mask(self, state: State) -> BoolArray:
        """Legal actions as a mask over `num_actions`."""
        ...

    def child(self, state: State, action: int) -> State:
        """A copy of `state` with `action` played."""
        ...

    def apply(self, state: State, action: int) -> None:
        """Play `action` in place."""
        ...

    def values(self, state: State) -> FloatArray:
        """Every player's final value in [-1, 1] in a terminal state, player p at index p."""
        ...


Inference = Callable[[FloatArray, BoolArray], tuple[FloatArray, FloatArray]]
"""Batched network inference: (observations, legal masks) -> (priors, values (batch, players), mover first)."""

LeafEvaluator = Callable[[list[State]], tuple[FloatArray, FloatArray]]
"""Priors (batch, actions) over legal actions and values (batch, players) per state, in the mover's frame.

Entry k of a value row belongs to the player k seats after the player to move (see
`games.to_mover_frame`); each value is in [-1, 1].
"""


@dataclass(frozen=True)
class SearchConfig:
    """Search parameters: simulations per move, PUCT constant, root noise (alpha; epsilon 0 means none).

    With `gumbel` set, the root is searched by Gumbel sampling and sequential halving
    (`gumbel.py`) instead of PUCT, and Dirichlet noise is not used.
    """

    simulations: int
    c_puct: float
    dirichlet_alpha: float = 0.3
    dirichlet_epsilon: float = 0.0
    gumbel: GumbelConfig | None = None


@dataclass(frozen=True)
class SearchResult:
    """What a search of many roots found, one row per root.

    `visits` (roots, actions) are the root visit counts (visits carried over from a reused
    tree included); `policy` (roots, actions) is the training target: the visit
    distribution, or with Gumbel the improved policy; `action` (roots,) is the move the
    search picks (most visited, or the sequential-halving winner); `trees` are the
    searched trees, to `advance` into the next move; `value` (roots, players) is the
    search's value of each root in the root mover's frame (entry 0: the player to move),
    in [-1, 1]: the mean value vector of the search's simulations.
    """

    visits: npt.NDArray[np.float32]
    policy: npt.NDArray[np.float32]
    action: npt.NDArray[np.int64]
    trees: list[SearchTree]
    value: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros((0, 0), np.float32))


_Pending = tuple[SearchTree, int, int]
"""A simulation waiting for its leaf's evaluation: the tree, the leaf node and the path's depth."""


class BatchedMCTS:
    """Searches many root states at once; `evaluations` counts leaf states sent to the evaluator,
    `simulations` the simulations run (an evaluated leaf, or a terminal one scored without the evaluator)."""

    def __init__(
        self, game: SearchGame, evaluate: LeafEvaluator, config: SearchConfig, rng: np.random.Generator
    ) -> None:
        self.game = game
        self.evaluate = evaluate
        self.config = config
        self.rng = rng
        self.evaluations = 0
        self.simulations = 0

    def search(self, roots: Sequence[State], add_noise: bool = False) -> npt.NDArray[np.float32]:
        """Root visit counts (len(roots), actions) after `simulations` simulations from each non-terminal root."""
        return self.run(roots, explore=add_noise).visits

    def run(
        self,
        roots: Sequence[State],
        *,
        explore: bool | Sequence[bool] = False,
        simulations: Sequence[int] | None = None,
        reuse: Sequence[SearchTree | None] | None = None,
    ) -> SearchResult:
        """Search every root: `simulations[i]` new simulations (default: the configured count) from root i.

        `explore` (for all roots or per root) adds root noise: Dirichlet noise for PUCT,
        Gumbel noise for the Gumbel root. `reuse[i]`, when given, is a tree whose root is
        `roots[i]` (from `SearchTree.advance`): the search continues it instead of starting over.
        """
        game = self.game
        count = len(roots)
        if count == 0:
            empty = np.zeros((0, game.num_actions), np.float32)
            return SearchResult(empty, empty, np.zeros(0, np.int64), [])
        if any(game.is_terminal(root) for root in roots):
            raise WorkloadError("MCTS was asked to search a finished game; only non-terminal roots can be searched")
        budgets = list(simulations) if simulations is not None else [self.config.simulations] * count
        if min(budgets) < 1:
            raise WorkloadError(f"every search needs at least one simulation, got budgets {budgets}")
        noisy = [explore] * count if isinstance(explore, bool) else list(explore)
        carried = list(reuse) if reuse is not None else [None] * count
        trees: list[SearchTree] = []
        fresh: list[_Pending] = []
        for root, budget, kept in zip(roots, budgets, carried, strict=True):
            tree = kept if kept is not None else SearchTree(game, root, budget + 2)
            if kept is None:
                fresh.append((tree, 0, 0))
            else:
                tree.reserve(budget + 2)
            trees.append(tree)
        if fresh:
            self._expand(fresh)
        self.simulations += sum(budgets)
        for tree, budget, noise in zip(trees, budgets, noisy, strict=True):
            tree.remaining = budget
            gumbel = self.config.gumbel
            if gumbel is not None:
                draws = np.zeros(game.num_actions, np.float32)
                if noise:
                    draws += self.rng.gumbel(size=game.num_actions).astype(np.float32)
                tree.halving = Halving(tree, draws, budget, gumbel)
            elif noise and self.config.dirichlet_epsilon > 0:
                self._add_noise(tree)
        # Each pass gives every tree one evaluated leaf (or finishes it on terminal leaves),
        # so the loop ends after at most max(budgets) passes.
        for _ in range(max(budgets)):
            pending: list[_Pending] = []
            for tree in trees:
                while tree.remaining > 0:
                    depth, leaf = tree.select(self.config.c_puct)
                    tree.remaining -= 1
                    terminal = tree.terminal_values.get(leaf)
                    if terminal is not None:
                        tree.backup(depth, terminal)
                        continue
                    pending.append((tree, leaf, depth))
                    break
            if not pending:
                break
            self._expand(pending)
        return self._result(trees)

    def _result(self, trees: list[SearchTree]) -> SearchResult:
        visits = np.stack([tree.visits[0] for tree in trees]).astype(np.float32)
        gumbel = self.config.gumbel
        if gumbel is None:
            policy = visits / np.maximum(visits.sum(axis=1, keepdims=True), 1.0)
            action = visits.argmax(axis=1).astype(np.int64)
        else:
            policy = np.stack([improved_policy(tree, gumbel) for tree in trees])
            action = np.asarray(
                [tree.halving.best(tree) if tree.halving is not None else 0 for tree in trees], dtype=np.int64
            )
        for tree in trees:
            tree.halving = None
        value = np.stack([to_mover_frame(tree.root_values(), int(tree.to_play[0])) for tree in trees])
        return SearchResult(visits, policy.astype(np.float32), action, trees, value)

    def _expand(self, pending: list[_Pending]) -> None:
        states = [tree.states[leaf] for tree, leaf, _ in pending]
        priors, values = self.evaluate(states)
        self.evaluations += len(states)
        priors = np.ascontiguousarray(priors, dtype=np.float32)
        values = np.ascontiguousarray(values, dtype=np.float32)
        for row, (tree, leaf, depth) in enumerate(pending):
            tree.expand(leaf, priors[row], self.game.legal_mask(states[row]), float(values[row, 0]))
            # The value row is in the leaf mover's frame; the backup reads it in that frame.
            tree.backup(depth, values[row], int(tree.to_play[leaf]))

    def _add_noise(self, tree: SearchTree) -> None:
        legal = tree.penalty[0] == 0.0
        noise = self.rng.dirichlet(np.full(int(legal.sum()), self.config.dirichlet_alpha))
        eps = self.config.dirichlet_epsilon
        tree.prior[0, legal] = (1.0 - eps) * tree.prior[0, legal] + eps * noise


def network_leaves(
    game: Game, infer: Callable[[FloatArray, BoolArray], tuple[FloatArray, FloatArray]]
) -> LeafEvaluator:
    """A leaf evaluator that stacks observations and legal masks and runs one batched inference."""

    def evaluate(states: list[State]) -> tuple[FloatArray, FloatArray]:
        return infer(game.observations(states), game.legal_masks(states))

    return evaluate


def rollout_leaves(
    game: SearchGame,
    rollouts: int,
    rng: np.random.Generator,
    *,
    max_moves: int = 0,
    cut_off: Callable[[State], FloatArray] | None = None,
) -> LeafEvaluator:
    """A leaf evaluator for pure MCTS: uniform priors and the mean result of random playouts.

    With `max_moves` (0: none) and `cut_off`, a playout still running after that many moves
    stops and is valued by `cut_off(state)` (every player's value, player p at index p): a
    game whose random playouts run for a thousand moves gets a baseline that costs less.
    """
    depth = game.max_length + 1 if max_moves <= 0 or cut_off is None else max_moves

    def evaluate(states: list[State]) -> tuple[FloatArray, FloatArray]:
        masks = np.stack([game.legal_mask(s) for s in states]).astype(np.float32)
        priors = masks / np.maximum(masks.sum(axis=1, keepdims=True), 1.0)
        values = np.zeros((len(states), game.num_players), dtype=np.float32)
        for row, state in enumerate(states):
            player = game.to_play(state)
            total = np.zeros(game.num_players, dtype=np.float32)
            for _ in range(rollouts):
                sim = state.clone()
                # A finite game ends within max_length moves, so this loop is bounded.
                for _ in range(depth):
                    if game.is_terminal(sim):
                        break
                    legal = game.legal_actions(sim)
                    game.apply(sim, legal[int(rng.integers(len(legal)))])
                if game.is_terminal(sim) or cut_off is None:
                    total += game.values(sim)
                else:
                    total += cut_off(sim)
            values[row] = to_mover_frame((total / rollouts).astype(np.float32), player)
        return priors, values

    return evaluate


def choose_action(visits: npt.NDArray[np.float32], temperature: bool, rng: np.random.Generator) -> int:
    """Sample an action in proportion to visits when `temperature` is on, else take the most visited."""
    if temperature:
        return int(rng.choice(len(visits), p=visits / visits.sum()))
    return int(np.argmax(visits))
