"""The per-simulation tree walk in compiled code: PUCT descent, expansion and backup over a tree's arrays.

The search tree lives in numpy arrays (`tree.SearchTree`); these functions are the inner
loops over them, compiled by numba so that one simulation's select and backup cost about
a microsecond instead of the tens that numpy's per-call overhead adds on arrays of a few
actions. Game stepping stays in OpenSpiel's C++, called from Python between the two.

Every function takes the arrays it touches and plain numbers, nothing else, so numba
compiles it without a Python object to call back into (numba comes with the `alphazero`
extra, as torch does).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt

F = TypeVar("F", bound=Callable[..., Any])


def _jit(function: F) -> F:
    # cache: compiled once per machine, not once per worker process; nogil: no lock held while it runs.
    return cast(F, numba.njit(cache=True, nogil=True)(function))


ILLEGAL = -1e9


@_jit
def descend(
    prior: npt.NDArray[np.float32],
    penalty: npt.NDArray[np.float32],
    visits: npt.NDArray[np.float32],
    value_sum: npt.NDArray[np.float32],
    children: npt.NDArray[np.int32],
    node_visits: npt.NDArray[np.float64],
    expanded: npt.NDArray[np.bool_],
    c_puct: float,
    first_action: int,
    path_nodes: npt.NDArray[np.int32],
    path_actions: npt.NDArray[np.int32],
) -> tuple[int, int]:
    """Walk from the root by PUCT to a node that is not expanded; record the path.

    `first_action` >= 0 is taken at the root instead of PUCT's choice (the Gumbel root's
    schedule). Returns (depth, leaf): the path is `path_nodes[:depth]`, `path_actions[:depth]`;
    `leaf` is the unexpanded (or terminal) node reached, or -1 when the last edge has no
    child yet (the caller adds it).
    """
    node = 0
    depth = 0
    actions = prior.shape[1]
    while expanded[node]:
        if depth == 0 and first_action >= 0:
            best = first_action
        else:
            coef = c_puct * math.sqrt(max(node_visits[node], 1.0))
            best = 0
            best_score = -np.inf
            for action in range(actions):
                n = visits[node, action]
                score = value_sum[node, action] / max(n, 1.0) + coef * prior[node, action] / (1.0 + n)
                score += penalty[node, action]
                if score > best_score:
                    best_score = score
                    best = action
        path_nodes[depth] = node
        path_actions[depth] = best
        depth += 1
        child = children[node, best]
        if child < 0:
            return depth, -1
        node = child
    return depth, node


@_jit
def backup(
    visits: npt.NDArray[np.float32],
    value_sum: npt.NDArray[np.float32],
    node_visits: npt.NDArray[np.float64],
    to_play: npt.NDArray[np.int8],
    path_nodes: npt.NDArray[np.int32],
    path_actions: npt.NDArray[np.int32],
    depth: int,
    values: npt.NDArray[np.float32],
    frame: int,
    root_sum: npt.NDArray[np.float64],
) -> None:
    """Add one visit along the path and, to each edge, the value of the player who chose it.

    `values` holds one entry per player in the frame of player `frame`: entry k belongs to
    player (frame + k) mod n (frame 0: entry p is player p). Every simulation passes the
    root, so the whole vector is also added to `root_sum` (entry p: player p).
    """
    players = values.shape[0]
    for k in range(players):
        root_sum[(frame + k) % players] += values[k]
    for step in range(depth):
        node = path_nodes[step]
        action = path_actions[step]
        visits[node, action] += 1.0
        node_visits[node] += 1.0
        value_sum[node, action] += values[(to_play[node] - frame) % players]


@_jit
def expand(
    prior: npt.NDArray[np.float32],
    penalty: npt.NDArray[np.float32],
    node_value: npt.NDArray[np.float32],
    expanded: npt.NDArray[np.bool_],
    node: int,
    priors: npt.NDArray[np.float32],
    mask: npt.NDArray[np.bool_],
    mover_value: float,
) -> None:
    """Store an evaluated node's priors (zero where illegal) and value; illegal actions get the penalty."""
    for action in range(priors.shape[0]):
        if mask[action]:
            prior[node, action] = priors[action]
            penalty[node, action] = 0.0
        else:
            prior[node, action] = 0.0
            penalty[node, action] = ILLEGAL
    node_value[node] = mover_value
    expanded[node] = True
