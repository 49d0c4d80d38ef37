"""PUCT Monte Carlo tree search over many games in lockstep, with leaves evaluated in one batch.

Each root gets its own tree stored in preallocated numpy arrays (one row per node, one
column per action). Every step walks each tree from its root to one unexpanded leaf,
then all leaves of all trees go to the evaluator together, so network inference runs at
a batch size equal to the number of games searched at once. Terminal leaves are scored
from the game's returns without the evaluator.

Any number of players: a leaf's value is a vector with one entry per player, and every
edge on the path adds the entry of the player who chose that edge, so each node's value is
seen from the perspective of the player who moved into it (the max-n backup; for two
zero-sum players it is the usual negamax).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from zeroloop.errors import WorkloadError
from zeroloop.workload.games import BoolArray, FloatArray, Game, State, from_mover_frame, to_mover_frame


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

_ILLEGAL = -1e9


@dataclass(frozen=True)
class SearchConfig:
    """Search parameters: simulations per move, PUCT constant, and root noise (alpha; epsilon 0 means none)."""

    simulations: int
    c_puct: float
    dirichlet_alpha: float = 0.3
    dirichlet_epsilon: float = 0.0


class _Tree:
    """One search tree in arrays; node 0 is the root."""

    def __init__(self, game: SearchGame, root: State, capacity: int) -> None:
        actions = game.num_actions
        self.game = game
        self.prior = np.zeros((capacity, actions), dtype=np.float32)
        self.penalty = np.zeros((capacity, actions), dtype=np.float32)
        self.visits = np.zeros((capacity, actions), dtype=np.float32)
        self.value_sum = np.zeros((capacity, actions), dtype=np.float32)
        self.children = np.full((capacity, actions), -1, dtype=np.int32)
        self.node_visits = np.zeros(capacity, dtype=np.float64)
        self.to_play = np.zeros(capacity, dtype=np.int8)
        self.expanded = np.zeros(capacity, dtype=np.bool_)
        self.terminal_values: dict[int, FloatArray] = {}
        self.states: list[State] = [root]
        self.to_play[0] = game.to_play(root)
        self.remaining = 0

    def select(self, c_puct: float) -> tuple[list[int], list[int], int]:
        """Walk from the root to a leaf; the nodes and actions on the way, and the leaf node."""
        nodes: list[int] = []
        actions: list[int] = []
        node = 0
        while self.expanded[node]:
            visits = self.visits[node]
            coef = c_puct * math.sqrt(max(self.node_visits[node], 1.0))
            score = self.value_sum[node] / np.maximum(visits, 1.0) + coef * self.prior[node] / (1.0 + visits)
            score += self.penalty[node]
            action = int(score.argmax())
            nodes.append(node)
            actions.append(action)
            child = int(self.children[node, action])
            if child < 0:
                return nodes, actions, self._add_child(node, action)
            # A terminal child is never expanded, so the walk stops there too.
            node = child
        return nodes, actions, node

    def _add_child(self, node: int, action: int) -> int:
        child = len(self.states)
        state = self.game.child(self.states[node], action)
        self.states.append(state)
        self.children[node, action] = child
        if self.game.is_terminal(state):
            self.terminal_values[child] = self.game.values(state)
        else:
            self.to_play[child] = self.game.to_play(state)
        return child

    def expand(self, node: int, priors: FloatArray, mask: BoolArray) -> None:
        """Store the evaluator's priors for `node`; illegal actions can never be selected."""
        self.prior[node] = np.where(mask, priors, 0.0)
        self.penalty[node] = np.where(mask, 0.0, _ILLEGAL)
        self.expanded[node] = True

    def backup(self, nodes: list[int], actions: list[int], values: FloatArray) -> None:
        """Add one visit to every edge on the path and the leaf's value for the player who chose that edge.

        `values` has one entry per player (player p at index p), in [-1, 1].
        """
        if not nodes:
            return
        index = np.asarray(nodes, dtype=np.intp)
        chosen = np.asarray(actions, dtype=np.intp)
        self.visits[index, chosen] += 1.0
        self.node_visits[index] += 1.0
        self.value_sum[index, chosen] += values[self.to_play[index]]


class BatchedMCTS:
    """Searches many root states at once; `evaluations` counts leaf states sent to the evaluator."""

    def __init__(
        self, game: SearchGame, evaluate: LeafEvaluator, config: SearchConfig, rng: np.random.Generator
    ) -> None:
        self.game = game
        self.evaluate = evaluate
        self.config = config
        self.rng = rng
        self.evaluations = 0

    def search(self, roots: Sequence[State], add_noise: bool = False) -> npt.NDArray[np.float32]:
        """Root visit counts (len(roots), actions) after `simulations` simulations from each non-terminal root."""
        game = self.game
        sims = self.config.simulations
        if not roots:
            return np.zeros((0, game.num_actions), np.float32)
        if any(game.is_terminal(root) for root in roots):
            raise WorkloadError("MCTS was asked to search a finished game; only non-terminal roots can be searched")
        trees = [_Tree(game, root, sims + 2) for root in roots]
        self._expand([(t, 0, [], []) for t in trees])
        if add_noise and self.config.dirichlet_epsilon > 0:
            for tree in trees:
                self._add_noise(tree)
        for tree in trees:
            tree.remaining = sims
        # Each pass gives every tree one evaluated leaf (or finishes it on terminal leaves),
        # so the loop ends after at most `sims` passes.
        for _ in range(sims):
            pending: list[tuple[_Tree, int, list[int], list[int]]] = []
            for tree in trees:
                while tree.remaining > 0:
                    nodes, actions, leaf = tree.select(self.config.c_puct)
                    tree.remaining -= 1
                    if leaf in tree.terminal_values:
                        tree.backup(nodes, actions, tree.terminal_values[leaf])
                        continue
                    pending.append((tree, leaf, nodes, actions))
                    break
            if not pending:
                break
            self._expand(pending)
        return np.stack([tree.visits[0] for tree in trees])

    def _expand(self, pending: list[tuple[_Tree, int, list[int], list[int]]]) -> None:
        states = [tree.states[leaf] for tree, leaf, _, _ in pending]
        priors, values = self.evaluate(states)
        self.evaluations += len(states)
        for row, (tree, leaf, nodes, actions) in enumerate(pending):
            state = tree.states[leaf]
            tree.expand(leaf, priors[row], self.game.legal_mask(state))
            tree.backup(nodes, actions, from_mover_frame(values[row], int(tree.to_play[leaf])))

    def _add_noise(self, tree: _Tree) -> None:
        legal = tree.penalty[0] == 0.0
        noise = self.rng.dirichlet(np.full(int(legal.sum()), self.config.dirichlet_alpha))
        eps = self.config.dirichlet_epsilon
        tree.prior[0, legal] = (1.0 - eps) * tree.prior[0, legal] + eps * noise


def network_leaves(
    game: Game, infer: Callable[[FloatArray, BoolArray], tuple[FloatArray, FloatArray]]
) -> LeafEvaluator:
    """A leaf evaluator that stacks observations and legal masks and runs one batched inference."""

    def evaluate(states: list[State]) -> tuple[FloatArray, FloatArray]:
        obs = np.stack([game.observation(s) for s in states])
        mask = np.stack([game.legal_mask(s) for s in states])
        return infer(obs, mask)

    return evaluate


def rollout_leaves(game: SearchGame, rollouts: int, rng: np.random.Generator) -> LeafEvaluator:
    """A leaf evaluator for pure MCTS: uniform priors and the mean result of random playouts."""

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
                for _ in range(game.max_length + 1):
                    if game.is_terminal(sim):
                        break
                    legal = game.legal_actions(sim)
                    game.apply(sim, legal[int(rng.integers(len(legal)))])
                total += game.values(sim)
            values[row] = to_mover_frame((total / rollouts).astype(np.float32), player)
        return priors, values

    return evaluate


def choose_action(visits: npt.NDArray[np.float32], temperature: bool, rng: np.random.Generator) -> int:
    """Sample an action in proportion to visits when `temperature` is on, else take the most visited."""
    if temperature:
        return int(rng.choice(len(visits), p=visits / visits.sum()))
    return int(np.argmax(visits))
