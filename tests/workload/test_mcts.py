"""Batched MCTS finds tactics in hand-made connect_four positions."""

from __future__ import annotations

import numpy as np
import pytest

from zeroloop.errors import WorkloadError
from zeroloop.workload.games import FloatArray, Game, State
from zeroloop.workload.mcts import BatchedMCTS, LeafEvaluator, SearchConfig, choose_action, rollout_leaves

# X (player 0) has three in the bottom row at columns 0-2 and is to move: column 3 wins.
WIN = [0, 0, 1, 1, 2, 2]
# X has three in the bottom row again, O (to move) must block at column 3 or lose.
BLOCK = [0, 6, 1, 6, 2]


def uniform_leaves(game: Game) -> LeafEvaluator:
    """Uniform priors and value 0: the search must find the tactic from terminal values alone."""

    def evaluate(states: list[State]) -> tuple[FloatArray, FloatArray]:
        masks = np.stack([game.legal_mask(s) for s in states]).astype(np.float32)
        return masks / masks.sum(axis=1, keepdims=True), np.zeros((len(states), 2), dtype=np.float32)

    return evaluate


@pytest.fixture
def game() -> Game:
    return Game("connect_four_2p")


def test_takes_immediate_win_and_blocks_immediate_loss_in_one_batch(game: Game) -> None:
    mcts = BatchedMCTS(game, uniform_leaves(game), SearchConfig(300, 1.5), np.random.default_rng(0))
    visits = mcts.search([game.state_after(WIN), game.state_after(BLOCK)])
    assert int(np.argmax(visits[0])) == 3
    assert int(np.argmax(visits[1])) == 3
    assert visits.sum(axis=1).tolist() == [300.0, 300.0]


def test_pure_mcts_with_rollouts_finds_the_win(game: Game) -> None:
    rng = np.random.default_rng(1)
    mcts = BatchedMCTS(game, rollout_leaves(game, 2, rng), SearchConfig(200, 1.5), rng)
    visits = mcts.search([game.state_after(WIN)])
    assert choose_action(visits[0], False, rng) == 3


def test_root_noise_keeps_illegal_actions_unvisited(game: Game) -> None:
    # Column 0 is full after six moves in it.
    state = game.state_after([0, 0, 0, 0, 0, 0])
    mcts = BatchedMCTS(game, uniform_leaves(game), SearchConfig(50, 1.5, 0.3, 0.5), np.random.default_rng(0))
    visits = mcts.search([state], add_noise=True)
    assert visits[0, 0] == 0
    assert visits[0].sum() == 50
    assert mcts.evaluations > 0


def test_no_roots_and_finished_roots(game: Game) -> None:
    mcts = BatchedMCTS(game, uniform_leaves(game), SearchConfig(5, 1.5), np.random.default_rng(0))
    assert mcts.search([]).shape == (0, 7)
    with pytest.raises(WorkloadError, match="finished game"):
        mcts.search([game.state_after([*WIN, 3])])
