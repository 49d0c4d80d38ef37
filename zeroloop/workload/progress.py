"""Values for a selfplay game cut off at its move cap: from a progress measure the game defines, else its returns.

A game that has not ended after `selfplay_max_moves` moves is truncated, so one long game
never holds up a selfplay job (a fresh network's chinese_checkers games run to
OpenSpiel's 1,000-move cap, all scored as draws). Its positions still teach something:

- where the game has a progress measure here (`PROGRESS`), each player's value is its
  progress lead: its progress (0 at the start, 1 with every piece home) minus the best
  progress among the others, in [-1, 1], so the player nearest to winning is ahead;
- otherwise the game's returns at truncation (OpenSpiel's returns so far), scaled to
  [-1, 1] like a final outcome.

chinese_checkers: a player's progress is how far its pieces have come from its home
triangle towards the opposite one, by the sum of their hex-grid distances to the far tip
of the target triangle, read from the board OpenSpiel draws (rows of cells, two
characters apart, rows offset by one character; players are the digits 1, 2, ...).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from zeroloop.workload.games import FloatArray, Game, State

Cell = tuple[int, int]  # (row, character column) of the drawn board
_BOARD_CHARS = set(" .123456")


def _cells(drawing: str) -> dict[Cell, str]:
    """Every cell of a drawn board and what is on it ('.' empty, a digit: that player's piece).

    Only lines of cells count: the drawing ends with a line naming the player to move.
    """
    board = [line if set(line) <= _BOARD_CHARS else "" for line in drawing.splitlines()]
    return {(row, column): char for row, line in enumerate(board) for column, char in enumerate(line) if char != " "}


def hex_distance(a: Cell, b: Cell) -> int:
    """Moves between two cells of the drawn hexagonal grid (columns doubled: neighbours in a row are 2 apart)."""
    rows, columns = abs(a[0] - b[0]), abs(a[1] - b[1])
    return rows + max(0, (columns - rows) // 2)


class ChineseCheckersProgress:
    """Each player's progress from its home triangle to the opposite one, in [0, 1]."""

    def __init__(self, game: Game) -> None:
        start = _cells(str(game.new_state()))
        top, bottom = min(row for row, _ in start), max(row for row, _ in start)
        middle = [column for row, column in start if row == (top + bottom) // 2]
        centre = (top + bottom, min(middle) + max(middle))  # twice the centre: a reflection is centre - cell
        self.players = game.num_players
        self.tips: list[Cell] = []
        self.span: list[float] = []
        for player in range(self.players):
            home = [cell for cell, char in start.items() if char == str(player + 1)]
            target = [(centre[0] - row, centre[1] - column) for row, column in home]
            # The target's far tip: the target cell farthest from the board's centre.
            tip = max(target, key=lambda cell: hex_distance(cell, (centre[0] // 2, centre[1] // 2)))
            initial = sum(hex_distance(cell, tip) for cell in home)
            finished = sum(hex_distance(cell, tip) for cell in target)
            self.tips.append(tip)
            self.span.append(max(initial - finished, 1))
        self._initial = [sum(hex_distance(c, t) for c in self._pieces(start, p)) for p, t in enumerate(self.tips)]

    @staticmethod
    def _pieces(cells: dict[Cell, str], player: int) -> list[Cell]:
        return [cell for cell, char in cells.items() if char == str(player + 1)]

    def __call__(self, state: State) -> FloatArray:
        """Progress of every player in `state`, player p at index p."""
        cells = _cells(str(state))
        progress = [
            (self._initial[p] - sum(hex_distance(cell, self.tips[p]) for cell in self._pieces(cells, p))) / self.span[p]
            for p in range(self.players)
        ]
        return np.clip(np.asarray(progress, dtype=np.float32), 0.0, 1.0)


PROGRESS: dict[str, Callable[[Game], Callable[[State], FloatArray]]] = {"chinese_checkers": ChineseCheckersProgress}
"""Games with a progress measure, by OpenSpiel name: a factory of the measure for a loaded game."""


def truncation_values(game: Game) -> Callable[[State], FloatArray]:
    """Every player's value, in [-1, 1], of a game cut off in `state` (player p at index p)."""
    factory = PROGRESS.get(game.name)
    if factory is None:
        return game.values  # the returns so far, scaled like an outcome
    measure = factory(game)

    def lead(state: State) -> FloatArray:
        progress = measure(state)
        others = np.array([np.delete(progress, p).max() for p in range(len(progress))], dtype=np.float32)
        values: FloatArray = np.clip(progress - others, -1.0, 1.0).astype(np.float32)
        return values

    return lead
