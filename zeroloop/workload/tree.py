"""One search tree in numpy arrays: one row per node, one column per action; node 0 is the root.

Edges hold visit counts and value sums; an edge's value is seen by the player who chose
it (the player to move at its parent). A tree can be carried into the next move: `advance`
keeps the subtree under the move played, renumbered so its top is the new root, so the
visits already spent there are not thrown away.

The walk itself (PUCT descent, expansion, backup) runs in `kernels`, compiled; this class
owns the arrays and the OpenSpiel states, and steps the game between the kernels' calls.
The path of the current simulation is kept in `path_nodes` / `path_actions`: one search
step of a tree has at most one simulation waiting for its leaf's evaluation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from zeroloop.workload import kernels
from zeroloop.workload.games import BoolArray, FloatArray, State

if TYPE_CHECKING:
    from zeroloop.workload.gumbel import Halving
    from zeroloop.workload.mcts import SearchGame

_ARRAYS = ("prior", "penalty", "visits", "value_sum", "children", "node_visits", "node_value", "to_play", "expanded")


class SearchTree:
    """A tree over one root state; grows by one node per simulation, `reserve` makes room ahead."""

    def __init__(self, game: SearchGame, root: State, capacity: int) -> None:
        actions = game.num_actions
        self.game = game
        self.prior = np.zeros((capacity, actions), dtype=np.float32)
        self.penalty = np.zeros((capacity, actions), dtype=np.float32)
        self.visits = np.zeros((capacity, actions), dtype=np.float32)
        self.value_sum = np.zeros((capacity, actions), dtype=np.float32)
        self.children = np.full((capacity, actions), -1, dtype=np.int32)
        self.node_visits = np.zeros(capacity, dtype=np.float64)
        # The evaluator's value of each expanded node for the player to move there.
        self.node_value = np.zeros(capacity, dtype=np.float32)
        self.to_play = np.zeros(capacity, dtype=np.int8)
        self.expanded = np.zeros(capacity, dtype=np.bool_)
        self.terminal_values: dict[int, FloatArray] = {}
        # Every simulation's value vector (entry p: player p) summed at the root, and how many.
        self.root_sum = np.zeros(game.num_players, dtype=np.float64)
        self.root_count = 0
        self.states: list[State] = [root]
        self.to_play[0] = game.to_play(root)
        self.remaining = 0
        self.halving: Halving | None = None
        self._paths(capacity)

    def _paths(self, capacity: int) -> None:
        # A path visits each node at most once, and the last edge may lead to a node not yet added.
        self.path_nodes = np.zeros(capacity + 1, dtype=np.int32)
        self.path_actions = np.zeros(capacity + 1, dtype=np.int32)

    @property
    def size(self) -> int:
        """Nodes in the tree."""
        return len(self.states)

    def reserve(self, extra: int) -> None:
        """Make room for `extra` more nodes."""
        need = self.size + extra
        capacity = self.prior.shape[0]
        if need <= capacity:
            return
        for name in _ARRAYS:
            old = getattr(self, name)
            fill = -1 if name == "children" else 0
            grown = np.full((need, *old.shape[1:]), fill, dtype=old.dtype)
            grown[:capacity] = old
            setattr(self, name, grown)
        self._paths(need)

    def select(self, c_puct: float) -> tuple[int, int]:
        """Walk from the root to a leaf by PUCT (the root by the halving schedule when there is one).

        Returns (depth, leaf): the path is `path_nodes[:depth]` with `path_actions[:depth]`;
        a node met for the first time is added (its state stepped from its parent's).
        """
        first = -1
        if self.halving is not None and self.expanded[0]:
            first = self.halving.next_action(self)
        depth, leaf = kernels.descend(
            self.prior,
            self.penalty,
            self.visits,
            self.value_sum,
            self.children,
            self.node_visits,
            self.expanded,
            c_puct,
            first,
            self.path_nodes,
            self.path_actions,
        )
        if leaf < 0:
            leaf = self._add_child(int(self.path_nodes[depth - 1]), int(self.path_actions[depth - 1]))
        return depth, leaf

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

    def expand(self, node: int, priors: FloatArray, mask: BoolArray, mover_value: float) -> None:
        """Store the evaluator's priors and value for `node`; illegal actions can never be selected."""
        kernels.expand(self.prior, self.penalty, self.node_value, self.expanded, node, priors, mask, mover_value)

    def backup(self, depth: int, values: FloatArray, frame: int = 0) -> None:
        """Add one visit to every edge of the current path and the leaf's value for the player who chose that edge.

        `values` has one entry per player in [-1, 1]; entry k belongs to player (frame + k) mod n
        (the default frame 0: entry p is player p; a mover-frame value passes the mover).
        """
        kernels.backup(
            self.visits,
            self.value_sum,
            self.node_visits,
            self.to_play,
            self.path_nodes,
            self.path_actions,
            depth,
            values,
            frame,
            self.root_sum,
        )
        self.root_count += 1

    def root_q(self) -> FloatArray:
        """Mean value of each root edge for the player to move at the root (0 where unvisited)."""
        q: FloatArray = (self.value_sum[0] / np.maximum(self.visits[0], 1.0)).astype(np.float32)
        return q

    def root_values(self) -> FloatArray:
        """The search's value of the root for every player (entry p: player p): the mean of the value
        vectors of the simulations this tree ran since it was made or advanced (zeros if none)."""
        values: FloatArray = (self.root_sum / max(self.root_count, 1)).astype(np.float32)
        return values

    def advance(self, action: int) -> SearchTree | None:
        """The subtree under root `action` as a tree of its own, or None when that child was never expanded."""
        top = int(self.children[0, action])
        if top < 0 or not self.expanded[top]:
            return None
        order = [top]
        # Breadth first over existing nodes: each node is listed once, so this ends after `size` steps.
        for node in order:
            kids = self.children[node]
            order.extend(int(k) for k in kids[kids >= 0])
        keep = np.asarray(order, dtype=np.intp)
        renumber = np.full(self.size, -1, dtype=np.int32)
        renumber[keep] = np.arange(len(order), dtype=np.int32)
        subtree = SearchTree.__new__(SearchTree)
        subtree.game = self.game
        for name in _ARRAYS:
            setattr(subtree, name, getattr(self, name)[keep].copy())
        subtree.children = np.where(subtree.children >= 0, renumber[np.maximum(subtree.children, 0)], -1).astype(
            np.int32
        )
        subtree.terminal_values = {
            int(renumber[node]): value for node, value in self.terminal_values.items() if renumber[node] >= 0
        }
        subtree.states = [self.states[node] for node in order]
        subtree.remaining = 0
        subtree.halving = None
        # The edges keep only their chooser's share of a value: the new root's vector starts afresh.
        subtree.root_sum = np.zeros_like(self.root_sum)
        subtree.root_count = 0
        subtree._paths(len(order))
        return subtree
