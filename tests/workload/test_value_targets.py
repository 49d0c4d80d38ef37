"""The search's own value of each position: recorded by selfplay, carried into the window, mixed into training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.workload.test_mcts import WIN, uniform_leaves
from tests.workload.test_nplayer import GAME as TOY
from tests.workload.test_nplayer import WIN_LAST_SEAT
from tests.workload.test_nplayer import uniform_leaves as toy_leaves
from zeroloop.config import WorkloadSettings
from zeroloop.workload.alphazero import AlphaZeroWorkload
from zeroloop.workload.datafiles import load_game_batch, load_window, write_npz
from zeroloop.workload.games import Game
from zeroloop.workload.mcts import BatchedMCTS, SearchConfig
from zeroloop.workload.protocol import ExportRequest, SelfplayRequest
from zeroloop.workload.train import value_targets


def test_the_search_values_a_won_position_for_the_mover_and_the_loss_for_the_other() -> None:
    game = Game("connect_four_2p")
    mcts = BatchedMCTS(game, uniform_leaves(game), SearchConfig(200, 1.5), np.random.default_rng(0))
    result = mcts.run([game.state_after(WIN), game.new_state()])
    assert result.value.shape == (2, 2)
    # Leaves are valued 0: only the winning move's terminal visits move the root's value.
    assert result.value[0, 0] > 0.5
    assert result.value[0, 1] == pytest.approx(-result.value[0, 0])
    assert abs(float(result.value[1, 0])) < 0.2  # nothing is decided in the opening


def test_a_three_player_root_value_is_in_the_movers_frame() -> None:
    # Player 2 moves and wins at once: in its frame entry 0 (itself) is high, entries 1 and 2
    # (players 0 and 1) low; a vector left in player order would put the winner last.
    mcts = BatchedMCTS(TOY, toy_leaves, SearchConfig(200, 1.5), np.random.default_rng(0))
    (value,) = mcts.run([WIN_LAST_SEAT]).value
    assert value[0] > 0.5 and value[1] < -0.5 and value[2] < -0.5


def test_a_reused_tree_values_its_new_root_from_its_own_simulations() -> None:
    game = Game("connect_four_2p")
    mcts = BatchedMCTS(game, uniform_leaves(game), SearchConfig(50, 1.5), np.random.default_rng(0))
    first = mcts.run([game.new_state()])
    subtree = first.trees[0].advance(3)
    assert subtree is not None and subtree.root_count == 0
    state = game.state_after([3])
    again = mcts.run([state], reuse=[subtree])
    assert again.trees[0].root_count == 50  # this search's simulations, not the carried visits


@pytest.fixture
def batch(tiny_settings: WorkloadSettings, tmp_path: Path) -> Path:
    output = tmp_path / "games.npz"
    AlphaZeroWorkload(tiny_settings).selfplay(SelfplayRequest("tic_tac_toe_2p", output, games=6, seed=3))
    return output


def test_selfplay_records_a_search_value_per_position_and_export_carries_it(
    tiny_settings: WorkloadSettings, batch: Path, tmp_path: Path
) -> None:
    arrays = load_game_batch(batch, "tic_tac_toe_2p")
    searched = arrays["search_value"]
    assert searched.shape == arrays["value"].shape
    assert np.all(np.abs(searched) <= 1.0) and np.abs(searched).sum() > 0
    window_path = tmp_path / "window.npz"
    AlphaZeroWorkload(tiny_settings).export(ExportRequest("tic_tac_toe_2p", (batch,), window_path, 10_000, seed=0))
    window = load_window(window_path)
    # Each row keeps its own position's pair: the outcome and the search's value travel together.
    pairs = {(tuple(z), tuple(q)) for z, q in zip(arrays["value"], searched, strict=True)}
    assert {(tuple(z), tuple(q)) for z, q in zip(window["value"], window["search_value"], strict=True)} <= pairs


def test_a_batch_without_search_values_stands_in_its_outcomes(
    tiny_settings: WorkloadSettings, batch: Path, tmp_path: Path
) -> None:
    older = {key: value for key, value in load_game_batch(batch).items() if key != "search_value"}
    old_path = tmp_path / "old.npz"
    write_npz(old_path, older)
    window_path = tmp_path / "window.npz"
    AlphaZeroWorkload(tiny_settings).export(ExportRequest("tic_tac_toe_2p", (old_path,), window_path, 10_000, seed=0))
    window = load_window(window_path)
    np.testing.assert_array_equal(window["search_value"], window["value"])


def test_the_value_target_mixes_in_the_search_value_by_its_weight() -> None:
    window = {
        "value": np.asarray([[1.0, -1.0], [-1.0, 1.0]], np.float32),
        "search_value": np.asarray([[0.2, -0.2], [0.6, -0.6]], np.float32),
    }
    np.testing.assert_allclose(value_targets(window, 0.0), window["value"])
    np.testing.assert_allclose(value_targets(window, 0.25), [[0.8, -0.8], [-0.6, 0.6]])
    np.testing.assert_allclose(value_targets({"value": window["value"]}, 0.5), window["value"])  # none recorded
