"""Symmetry augmentation moves observations, policies and legal masks consistently."""

from __future__ import annotations

import numpy as np
import pytest

from zeroloop.workload.games import Game
from zeroloop.workload.symmetry import Symmetries, symmetries_of


def _mapped_action(symmetries: Symmetries, index: int, action: int, num_actions: int) -> int:
    onehot = np.zeros((1, num_actions), dtype=np.float32)
    onehot[0, action] = 1.0
    _, moved = symmetries.apply(index, np.zeros((1, 1, 1, 1), dtype=np.float32), onehot)
    return int(np.argmax(moved[0]))


@pytest.mark.parametrize(
    ("key", "actions", "count"),
    [("tic_tac_toe_2p", [0, 4, 5], 8), ("tic_tac_toe_2p", [1, 2, 6, 8], 8), ("connect_four_2p", [0, 1, 1, 5, 6], 2)],
)
def test_transformed_position_matches_position_from_transformed_moves(key: str, actions: list[int], count: int) -> None:
    game = Game(key)
    symmetries = symmetries_of(game)
    assert len(symmetries) == count
    state = game.state_after(actions)
    obs = game.observation(state)[None]
    mask = game.legal_mask(state)[None]
    seen = set()
    for index in range(len(symmetries)):
        moved_obs, moved_mask = symmetries.apply(index, obs, mask)
        mapped = [_mapped_action(symmetries, index, a, game.num_actions) for a in actions]
        twin = game.state_after(mapped)
        np.testing.assert_array_equal(moved_obs[0], game.observation(twin))
        np.testing.assert_array_equal(moved_mask[0], game.legal_mask(twin))
        seen.add(tuple(mapped))
    # The transforms are distinct: no two map the move sequence to the same sequence.
    assert len(seen) == count


def test_transformed_policy_support_matches_transformed_legal_mask() -> None:
    game = Game("tic_tac_toe_2p")
    symmetries = symmetries_of(game)
    state = game.state_after([0, 4, 5])
    mask = game.legal_mask(state)[None]
    policy = np.where(mask, np.arange(1, 10, dtype=np.float32), 0.0)
    policy /= policy.sum()
    for index in range(len(symmetries)):
        _, moved_policy = symmetries.apply(index, game.observation(state)[None], policy)
        _, moved_mask = symmetries.apply(index, game.observation(state)[None], mask)
        np.testing.assert_array_equal(moved_policy[0] > 0, moved_mask[0])
        assert moved_policy.sum() == pytest.approx(1.0)


def test_games_without_known_symmetries_get_identity_only() -> None:
    game = Game("hex_2p", {"board_size": 3})
    assert len(symmetries_of(game)) == 1


@pytest.mark.parametrize(("key", "actions"), [("tic_tac_toe_2p", [0, 4, 5]), ("connect_four_2p", [0, 1, 1, 5])])
def test_augmentation_keeps_the_side_to_move(key: str, actions: list[int]) -> None:
    game = Game(key)
    state = game.state_after(actions)
    mover = game.to_play(state)
    obs = game.observation(state)[None]
    symmetries = symmetries_of(game)
    for index in range(len(symmetries)):
        moved, _ = symmetries.apply(index, obs, game.legal_mask(state)[None])
        to_move = moved[0, -game.num_players :]
        # Still constant planes, still naming the same player.
        assert to_move[mover].min() == 1.0
        assert np.delete(to_move, mover, axis=0).max() == 0.0
