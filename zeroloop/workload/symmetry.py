"""Board symmetries of games, used to augment training windows.

A symmetry maps a position to an equivalent one: it moves the observation planes and,
in the same way, the action distribution and legal mask. For tic_tac_toe an action is a
cell of the 3x3 board, so all 8 dihedral transforms apply; for connect_four an action is
a column, so only the left-right mirror does. Games not listed get no augmentation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from zeroloop.workload.games import Game

Grid = Callable[[npt.NDArray[np.generic]], npt.NDArray[np.generic]]
"""A transform of an array whose last two axes are a board grid."""


def _rot(k: int, flip: bool) -> Grid:
    def transform(x: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
        y = np.rot90(x, k, axes=(-2, -1))
        return np.flip(y, axis=-1) if flip else y

    return transform


_DIHEDRAL: tuple[Grid, ...] = tuple(_rot(k, flip) for flip in (False, True) for k in range(4))
_MIRROR: tuple[Grid, ...] = (_rot(0, False), _rot(0, True))


@dataclass(frozen=True)
class Symmetries:
    """The symmetries of one game: grid transforms and the board shape that actions index (rows, columns)."""

    transforms: tuple[Grid, ...]
    action_grid: tuple[int, int]

    def __len__(self) -> int:
        return len(self.transforms)

    def apply(
        self, index: int, obs: npt.NDArray[np.float32], actions: npt.NDArray[np.generic]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.generic]]:
        """Transform `obs` (S, C, H, W) and a per-action array (S, A) by symmetry number `index`."""
        transform = self.transforms[index]
        count = actions.shape[0]
        moved = transform(actions.reshape(count, *self.action_grid)).reshape(count, -1)
        return np.ascontiguousarray(transform(obs)), np.ascontiguousarray(moved)


def symmetries_of(game: Game) -> Symmetries:
    """The known symmetries of `game`; just the identity for games without known ones."""
    _, height, width = game.obs_shape
    if game.name == "tic_tac_toe" and height == width and game.num_actions == height * width:
        return Symmetries(_DIHEDRAL, (height, width))
    if game.name == "connect_four" and game.num_actions == width:
        return Symmetries(_MIRROR, (1, width))
    return Symmetries((_rot(0, False),), (1, game.num_actions))
