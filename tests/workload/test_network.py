"""The network's shape follows the game (heads wide enough for flat observations); its inference copy."""

from __future__ import annotations

import numpy as np
import torch

from zeroloop.workload.games import Game
from zeroloop.workload.network import NetShape, inference_copy, inference_dtype, new_net


def test_flat_observations_keep_the_towers_width_in_the_heads() -> None:
    game = Game("chinese_checkers_3p")
    assert game.obs_shape[1:] == (1, 1)
    net = new_net(NetShape(game.obs_shape, game.num_actions, 1, 16, 8, 3), seed=0)
    assert net.policy_fc.in_features == 16
    board = new_net(NetShape((5, 6, 7), 7, 1, 16, 8, 2), seed=0)
    assert board.policy_fc.in_features == 2 * 6 * 7


def test_inference_copy_folds_the_norms_and_computes_the_same_function() -> None:
    game = Game("connect_four_2p")
    net = new_net(NetShape(game.obs_shape, game.num_actions, 2, 16, 8, 2), seed=0)
    # Non-trivial running statistics, as a trained network has.
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    net.eval()
    x = torch.from_numpy(np.random.default_rng(0).random((5, *game.obs_shape)).astype(np.float32))
    copy = inference_copy(net, torch.float32)
    assert not any(isinstance(module, torch.nn.BatchNorm2d) for module in copy.modules())
    with torch.inference_mode():
        for mine, theirs in zip(copy(x), net(x), strict=True):
            torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)
        _logits, value = inference_copy(net, torch.bfloat16)(x.to(torch.bfloat16))
        torch.testing.assert_close(value.float(), net(x)[1], rtol=0.0, atol=0.03)


def test_precision_float32_and_bfloat16_are_taken_as_named() -> None:
    cpu = torch.device("cpu")
    assert inference_dtype("float32", cpu) == torch.float32
    assert inference_dtype("bfloat16", cpu) == torch.bfloat16
    assert inference_dtype("auto", cpu) in (torch.float32, torch.bfloat16)
