"""Config keys, supported games and per-config parameters."""

from __future__ import annotations

import pytest

from zeroloop.config import WorkloadSettings
from zeroloop.errors import WorkloadError
from zeroloop.workload.alphazero import AlphaZeroWorkload
from zeroloop.workload.games import Game, supported_games
from zeroloop.workload.params import AlphaZeroParams


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("kuhn_poker_2p", "only two-player"),
        ("connect_four_3p", "only two-player"),
        ("no_such_game_2p", "no game named"),
        ("connect_four", "expected the form"),
    ],
)
def test_unsupported_key_lists_supported_games(key: str, why: str) -> None:
    with pytest.raises(WorkloadError) as caught:
        Game(key)
    message = str(caught.value)
    assert key in message
    assert why in message
    assert "connect_four_2p" in message
    assert "tic_tac_toe_2p" in message
    assert "hex_2p" in message


def test_supported_games_include_the_classics() -> None:
    names = supported_games()
    assert {"tic_tac_toe", "connect_four", "hex"} <= set(names)
    assert "kuhn_poker" not in names


def test_game_params_set_hex_board_size() -> None:
    workload = AlphaZeroWorkload(WorkloadSettings(game_params={"hex_2p": {"board_size": 5}}))
    game = workload.game("hex_2p")
    assert game.num_actions == 25
    assert game.obs_shape == (9, 5, 5)


def test_bad_game_params_name_the_game() -> None:
    with pytest.raises(WorkloadError, match="hex"):
        Game("hex_2p", {"no_such_param": 3})


def test_overrides_replace_settings_for_one_config_only() -> None:
    settings = WorkloadSettings(overrides={"tic_tac_toe_2p": {"blocks": 1, "simulations": 25.0}})
    tic = AlphaZeroParams.resolve(settings, "tic_tac_toe_2p")
    other = AlphaZeroParams.resolve(settings, "connect_four_2p")
    assert (tic.blocks, tic.simulations) == (1, 25)
    assert isinstance(tic.simulations, int)
    assert (other.blocks, other.simulations) == (settings.blocks, settings.simulations)


def test_unknown_override_is_named() -> None:
    settings = WorkloadSettings(overrides={"tic_tac_toe_2p": {"blockz": 1}})
    with pytest.raises(WorkloadError, match="blockz"):
        AlphaZeroParams.resolve(settings, "tic_tac_toe_2p")
