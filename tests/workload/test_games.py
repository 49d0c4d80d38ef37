"""Config keys, supported games and per-config parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zeroloop.config import WorkloadSettings
from zeroloop.errors import WorkloadError
from zeroloop.workload.alphazero import AlphaZeroWorkload
from zeroloop.workload.games import Game, from_mover_frame, supported_games, supported_keys, to_mover_frame
from zeroloop.workload.network import NetShape, new_net
from zeroloop.workload.params import AlphaZeroParams


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("kuhn_poker_2p", "kuhn_poker: it has chance events"),
        ("blotto_2p", "blotto: it is a simultaneous-move game"),
        ("connect_four_3p", "connect_four is played by 2 to 2 players"),
        ("chinese_checkers_7p", "chinese_checkers is played by 2 to 6 players"),
        ("no_such_game_2p", "no game named"),
        ("connect_four", "expected the form"),
    ],
)
def test_unsupported_key_says_what_is_supported(key: str, why: str) -> None:
    with pytest.raises(WorkloadError) as caught:
        Game(key)
    message = str(caught.value)
    assert key in message
    assert why in message
    assert "supported are deterministic, sequential, perfect-information games with 2 to 6 players" in message
    for supported in ("connect_four_2p", "tic_tac_toe_2p", "hex_2p", "chinese_checkers_3p", "quoridor_4p"):
        assert supported in message


def test_supported_games_include_the_classics_and_n_player_games() -> None:
    names = supported_games()
    assert {"tic_tac_toe", "connect_four", "hex", "chinese_checkers", "quoridor"} <= set(names)
    assert "kuhn_poker" not in names
    keys = supported_keys()
    assert {f"chinese_checkers_{n}p" for n in range(2, 7)} <= set(keys)
    assert {"quoridor_3p", "quoridor_4p"} <= set(keys)
    assert "quoridor_5p" not in keys


@pytest.mark.parametrize(("key", "players"), [("chinese_checkers_3p", 3), ("quoridor_4p", 4), ("connect_four_2p", 2)])
def test_n_player_keys_load_with_that_many_players(key: str, players: int) -> None:
    game = Game(key)
    assert game.num_players == players
    state = game.new_state()
    assert game.observation(state).shape == game.obs_shape
    # The last `players` planes say who is to move: player 0 at the start.
    to_move = game.observation(state)[-players:]
    assert to_move[0].min() == 1.0 and to_move[1:].max() == 0.0


def test_player_count_in_game_params_must_agree_with_the_key() -> None:
    assert Game("chinese_checkers_3p", {"players": 3}).num_players == 3
    with pytest.raises(WorkloadError, match="players=4, but the config key says 3 players"):
        Game("chinese_checkers_3p", {"players": 4})


def test_values_are_returns_scaled_to_the_unit_interval() -> None:
    # Chinese checkers pays the winner 2 and the others -1 with three players.
    game = Game("chinese_checkers_3p", {"max_moves": 4})
    state = game.new_state()
    for _ in range(50):
        if game.is_terminal(state):
            break
        game.apply(state, game.legal_actions(state)[0])
    assert game.is_terminal(state)
    raw = np.asarray(game.returns(state))
    np.testing.assert_allclose(game.values(state), 2 * (raw + 1) / 3 - 1, rtol=1e-6)
    assert float(game.values(state).min()) >= -1.0 and float(game.values(state).max()) <= 1.0


def test_mover_frame_puts_the_mover_first_and_round_trips() -> None:
    values = np.asarray([1.0, 2.0, 3.0], dtype=np.float32)
    moved = to_mover_frame(values, 1)
    np.testing.assert_array_equal(moved, [2.0, 3.0, 1.0])
    np.testing.assert_array_equal(from_mover_frame(moved, 1), values)


@pytest.mark.parametrize("key", ["tic_tac_toe_2p", "connect_four_2p"])
def test_input_shows_who_is_to_move_where_openspiel_does_not(key: str) -> None:
    game = Game(key)
    state = game.state_after([0, 4] if key == "tic_tac_toe_2p" else [0, 3])
    # OpenSpiel shows both players the same tensor, so the side to move is not in it.
    assert state.observation_tensor(0) == state.observation_tensor(1)
    as_first, as_second = game.input_planes(state, 0), game.input_planes(state, 1)
    assert not np.array_equal(as_first, as_second)
    np.testing.assert_array_equal(as_first[:-2], as_second[:-2])
    np.testing.assert_array_equal(game.observation(state), as_first)


@pytest.mark.parametrize("key", ["tic_tac_toe_2p", "connect_four_2p", "chinese_checkers_3p"])
def test_batched_observations_and_masks_are_each_states_own(key: str) -> None:
    game = Game(key)
    rng = np.random.default_rng(0)
    states = [game.new_state()]
    for _ in range(6):
        state = states[-1].clone()
        legal = game.legal_actions(state)
        game.apply(state, legal[int(rng.integers(len(legal)))])
        states.append(state)
    np.testing.assert_array_equal(game.observations(states), np.stack([game.observation(s) for s in states]))
    np.testing.assert_array_equal(game.legal_masks(states), np.stack([game.legal_mask(s) for s in states]))


def test_network_tells_the_same_board_apart_by_the_side_to_move() -> None:
    # The same tic-tac-toe board with X or O to move, and opposite value targets: learnable only
    # because the to-move planes differ.
    game = Game("tic_tac_toe_2p")
    state = game.state_after([0, 4])
    obs = torch.from_numpy(np.stack([game.input_planes(state, 0), game.input_planes(state, 1)]))
    target = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny net trains fastest on one thread
    try:
        value = _fit_two_positions(game, obs, target)
    finally:
        torch.set_num_threads(threads)
    assert float(value[0, 0]) > 0.5 and float(value[1, 0]) < -0.5


def _fit_two_positions(game: Game, obs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    net = new_net(NetShape(game.obs_shape, game.num_actions, 1, 8, 8, 2), seed=0)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(150):
        _, value = net(obs)
        loss = F.mse_loss(value, target)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    net.eval()
    with torch.no_grad():
        _, value = net(obs)
    return value


def test_game_params_set_hex_board_size() -> None:
    workload = AlphaZeroWorkload(WorkloadSettings(game_params={"hex_2p": {"board_size": 5}}))
    game = workload.game("hex_2p")
    assert game.num_actions == 25
    assert game.obs_shape == (9 + 2, 5, 5)


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
