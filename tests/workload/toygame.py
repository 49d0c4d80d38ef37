"""A three-player toy game for search tests: three in a row on a 4x4 board, players 0, 1, 2 in turn."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from zeroloop.workload.games import BoolArray, FloatArray

SIZE = 4
LINES = [
    [r * SIZE + c + k * dc + k * dr * SIZE for k in range(3)]
    for r in range(SIZE)
    for c in range(SIZE)
    for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1))
    if 0 <= r + 2 * dr < SIZE and 0 <= c + 2 * dc < SIZE
]


@dataclass
class ToyState:
    """Cells hold -1 (empty) or the player who marked them; `winner` is -1 until someone has a line."""

    cells: list[int] = field(default_factory=lambda: [-1] * SIZE * SIZE)
    mover: int = 0
    winner: int = -1

    def clone(self) -> ToyState:
        return ToyState(list(self.cells), self.mover, self.winner)


class ThreeInARow:
    """Implements what `mcts.SearchGame` asks for; the winner's value is 1, every other player's -1."""

    num_actions = SIZE * SIZE
    num_players = 3
    max_length = SIZE * SIZE

    @staticmethod
    def position(marks: dict[int, int], mover: int) -> ToyState:
        """A state with `marks` (cell -> player) placed and `mover` to move."""
        state = ToyState(mover=mover)
        for cell, player in marks.items():
            state.cells[cell] = player
        return state

    def is_terminal(self, state: ToyState) -> bool:
        return state.winner >= 0 or -1 not in state.cells

    def to_play(self, state: ToyState) -> int:
        return state.mover

    def legal_actions(self, state: ToyState) -> list[int]:
        return [i for i, cell in enumerate(state.cells) if cell < 0]

    def legal_mask(self, state: ToyState) -> BoolArray:
        return np.asarray([cell < 0 for cell in state.cells], dtype=np.bool_)

    def apply(self, state: ToyState, action: int) -> None:
        assert state.cells[action] < 0
        state.cells[action] = state.mover
        if any(all(state.cells[i] == state.mover for i in line) for line in LINES):
            state.winner = state.mover
        state.mover = (state.mover + 1) % self.num_players

    def child(self, state: ToyState, action: int) -> ToyState:
        copy = state.clone()
        self.apply(copy, action)
        return copy

    def values(self, state: ToyState) -> FloatArray:
        if state.winner < 0:
            return np.zeros(self.num_players, dtype=np.float32)
        values = np.full(self.num_players, -1.0, dtype=np.float32)
        values[state.winner] = 1.0
        return values
