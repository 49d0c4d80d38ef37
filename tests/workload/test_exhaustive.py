"""The exhaustive check finds every losing line of a move choice, and none of perfect play."""

from __future__ import annotations

import functools

import pytest

from zeroloop.errors import WorkloadError
from zeroloop.workload import exhaustive
from zeroloop.workload.exhaustive import check
from zeroloop.workload.games import Game, State


@pytest.fixture(scope="module")
def game() -> Game:
    return Game("tic_tac_toe_2p")


def _perfect(game: Game) -> exhaustive.Chooser:
    @functools.cache
    def value(history: tuple[int, ...]) -> float:  # the mover's minimax value, -1..1
        state = game.state_after(list(history))
        if game.is_terminal(state):
            mover = len(history) % 2
            return float(game.returns(state)[mover])
        return max(-value((*history, action)) for action in game.legal_actions(state))

    def choose(state: State) -> int:
        history = tuple(state.history())
        return max(game.legal_actions(state), key=lambda action: -value((*history, action)))

    return choose


def test_perfect_play_never_loses_and_the_first_legal_move_does(game: Game) -> None:
    perfect = check(game, _perfect(game))
    assert perfect.lost == 0 and perfect.first_loss is None
    assert perfect.lines > 100 and perfect.drawn > 0
    naive = check(game, lambda state: game.legal_actions(state)[0])
    assert naive.lost > 0 and naive.first_loss is not None
    lost_at = game.state_after(naive.first_loss)
    assert game.is_terminal(lost_at) and sorted(game.returns(lost_at)) == [-1.0, 1.0]


def test_a_game_too_large_is_refused(game: Game, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exhaustive, "MAX_LINES", 10)
    with pytest.raises(WorkloadError, match="too large"):
        check(game, lambda state: game.legal_actions(state)[0])
