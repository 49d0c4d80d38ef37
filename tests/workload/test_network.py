"""The network's shape follows the game: heads wide enough for flat observations."""

from __future__ import annotations

from zeroloop.workload.games import Game
from zeroloop.workload.network import NetShape, new_net


def test_flat_observations_keep_the_towers_width_in_the_heads() -> None:
    game = Game("chinese_checkers_3p")
    assert game.obs_shape[1:] == (1, 1)
    net = new_net(NetShape(game.obs_shape, game.num_actions, 1, 16, 8, 3), seed=0)
    assert net.policy_fc.in_features == 16
    board = new_net(NetShape((5, 6, 7), 7, 1, 16, 8, 2), seed=0)
    assert board.policy_fc.in_features == 2 * 6 * 7
