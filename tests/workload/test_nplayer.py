"""n-player search: each player's value is backed up to the edges that player chose."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.workload.toygame import ThreeInARow, ToyState
from zeroloop.config import WorkloadSettings
from zeroloop.workload.alphazero import AlphaZeroWorkload
from zeroloop.workload.datafiles import load_game_batch
from zeroloop.workload.games import FloatArray, Game
from zeroloop.workload.mcts import BatchedMCTS, LeafEvaluator, SearchConfig, rollout_leaves
from zeroloop.workload.network import load_net
from zeroloop.workload.progress import ChineseCheckersProgress, truncation_values
from zeroloop.workload.protocol import EvaluateRequest, ExportRequest, Player, SelfplayRequest, TrainRequest

GAME = ThreeInARow()
# Player 0 to move holds cells 0 and 1; cell 2 completes its line. Players 1 and 2 are scattered.
WIN = ThreeInARow.position({0: 0, 1: 0, 9: 1, 15: 1, 12: 2, 7: 2}, mover=0)
# Player 0 to move has no line to complete; player 1 (next to move) threatens 4-5-6, only player 0
# can stop it before player 1 moves.
BLOCK = ThreeInARow.position({0: 0, 10: 0, 4: 1, 5: 1, 15: 2, 3: 2}, mover=0)
# Player 2 to move holds 8 and 9 (10 completes it), and player 0, who moves next, threatens
# 0-5-10 on the diagonal: 10 both wins for player 2 and blocks player 0. A backup that credited
# player 2's edges with another player's value would avoid it.
WIN_LAST_SEAT = ThreeInARow.position({8: 2, 9: 2, 0: 0, 5: 0, 3: 1, 14: 1}, mover=2)


def uniform_leaves(states: list[ToyState]) -> tuple[FloatArray, FloatArray]:
    """Uniform priors and value 0 for everyone: tactics must come from terminal values alone."""
    masks = np.stack([GAME.legal_mask(s) for s in states]).astype(np.float32)
    return masks / masks.sum(axis=1, keepdims=True), np.zeros((len(states), 3), dtype=np.float32)


def _best(evaluate: LeafEvaluator, state: ToyState, simulations: int) -> int:
    mcts = BatchedMCTS(GAME, evaluate, SearchConfig(simulations, 1.5), np.random.default_rng(0))
    visits = mcts.search([state])
    assert visits.sum() == simulations
    return int(np.argmax(visits[0]))


def test_toy_game_lines_are_right() -> None:
    state = WIN.clone()
    GAME.apply(state, 2)
    assert GAME.is_terminal(state) and GAME.values(state).tolist() == [1.0, -1.0, -1.0]
    assert not any(GAME.is_terminal(s) for s in (WIN, BLOCK, WIN_LAST_SEAT))


@pytest.mark.parametrize(("state", "move"), [(WIN, 2), (BLOCK, 6), (WIN_LAST_SEAT, 10)])
def test_three_player_search_takes_the_win_and_blocks_the_next_players_win(state: ToyState, move: int) -> None:
    assert _best(uniform_leaves, state, 800) == move


def test_three_player_search_with_random_rollouts_blocks() -> None:
    rng = np.random.default_rng(3)
    assert _best(rollout_leaves(GAME, 4, rng), BLOCK, 600) == 6


def test_edges_hold_the_value_of_the_player_who_chose_them() -> None:
    # After player 0 plays elsewhere, player 1 wins at 6: that edge must look good to player 1
    # (value +1) even though the same leaf is worth -1 to players 0 and 2.
    mcts = BatchedMCTS(GAME, uniform_leaves, SearchConfig(400, 1.5), np.random.default_rng(0))
    after = GAME.child(BLOCK, 11)
    assert GAME.to_play(after) == 1
    visits = mcts.search([after])
    assert int(np.argmax(visits[0])) == 6


def test_chinese_checkers_3p_selfplay_train_match_end_to_end(tiny_settings: WorkloadSettings, tmp_path: Path) -> None:
    key = "chinese_checkers_3p"
    settings = tiny_settings.model_copy(update={"game_params": {key: {"max_moves": 12}}, "simulations": 6})
    workload = AlphaZeroWorkload(settings)
    batch, window, model, match = (tmp_path / name for name in ("b.npz", "w.npz", "m.pt", "r.json"))
    evidence = workload.selfplay(SelfplayRequest(key, batch, games=3, seed=1))
    arrays = load_game_batch(batch, key)
    assert evidence.counts["games"] == 3
    positions = arrays["obs"].shape[0]
    assert arrays["value"].shape == (positions, 3)
    assert arrays["obs"].shape[1:] == workload.game(key).obs_shape
    workload.export(ExportRequest(key, (batch,), window, window_samples=1000))
    evidence = workload.train(TrainRequest(key, window, model, steps=4))
    assert np.isfinite(evidence.counts["loss"])
    net, _ = load_net(model, key)
    assert net.shape.num_players == 3
    evidence = workload.evaluate(EvaluateRequest(key, Player.of_model(model), Player("mcts"), match, games=3))
    result = json.loads(match.read_text())
    assert result["games"] == evidence.counts["games"] == 3
    assert [r["candidate_seat"] for r in result["game_results"]] == [0, 1, 2]
    assert result["wins"] + result["draws"] + result["losses"] == 6


def test_three_player_value_targets_are_in_the_movers_frame(tiny_settings: WorkloadSettings, tmp_path: Path) -> None:
    # Quoridor on a 5x5 board with three players ends with one winner (1) and two losers (-0.5).
    key = "quoridor_3p"
    settings = tiny_settings.model_copy(update={"game_params": {key: {"board_size": 5}}, "simulations": 4})
    workload = AlphaZeroWorkload(settings)
    workload.selfplay(SelfplayRequest(key, tmp_path / "q.npz", games=4, seed=0))
    arrays = load_game_batch(tmp_path / "q.npz", key)
    decisive = 0
    for number in range(4):
        rows = arrays["value"][arrays["game_index"] == number]
        # The last three input planes name the mover (quoridor moves in the order 0, 2, 1).
        movers = arrays["obs"][arrays["game_index"] == number, -3:, 0, 0].argmax(axis=1)
        assert movers[:3].tolist() == [0, 2, 1]
        outcome = np.roll(rows[0], movers[0])  # player p's outcome at index p
        for row, mover in zip(rows, movers, strict=True):
            np.testing.assert_array_equal(row, np.roll(outcome, -mover))
        decisive += sorted(outcome.tolist()) == [-0.5, -0.5, 1.0]
    assert decisive > 0  # the rotation is visible only in a game somebody won


def test_chinese_checkers_progress_is_the_same_for_every_seat_and_grows_as_pieces_advance() -> None:
    game = Game("chinese_checkers_3p")
    measure = ChineseCheckersProgress(game)
    assert measure.span[0] == measure.span[1] == measure.span[2] > 0
    state = game.new_state()
    np.testing.assert_array_equal(measure(state), np.zeros(3))
    rng = np.random.default_rng(0)
    for _ in range(120):
        legal = game.legal_actions(state)
        game.apply(state, legal[int(rng.integers(len(legal)))])
    progress = measure(state)
    assert np.all((progress > 0) & (progress < 1))
    lead = truncation_values(game)(state)
    leader = int(progress.argmax())
    assert lead[leader] >= 0 and all(lead[p] <= 0 for p in range(3) if p != leader)


def test_selfplay_cuts_games_off_at_the_move_cap_and_values_them_by_progress(
    tiny_settings: WorkloadSettings, tmp_path: Path
) -> None:
    key = "chinese_checkers_3p"
    # No preset: its own 300-move cut-off would override this one.
    update = {"simulations": 2, "parallel_games": 4, "selfplay_max_moves": 30, "overrides": {}}
    settings = tiny_settings.model_copy(update=update)
    evidence = AlphaZeroWorkload(settings).selfplay(SelfplayRequest(key, tmp_path / "c.npz", games=4, seed=0))
    assert evidence.counts["games"] == evidence.counts["truncated"] == 4
    arrays = load_game_batch(tmp_path / "c.npz", key)
    assert arrays["game_lengths"].tolist() == [30] * 4
    # Progress leads, not the -1/3 every seat gets from a drawn (capped) OpenSpiel game.
    assert np.all(np.abs(arrays["value"]) <= 1) and not np.allclose(arrays["value"], -1 / 3)


def test_capped_matches_and_baseline_playouts_end_and_are_adjudicated_by_progress(
    tiny_settings: WorkloadSettings, tmp_path: Path
) -> None:
    key = "chinese_checkers_3p"
    settings = tiny_settings.model_copy(
        update={
            "simulations": 2,
            "eval_simulations": 2,
            "baseline_simulations": 3,
            "baseline_rollout_moves": 5,
            "eval_max_moves": 12,
            "eval_parallel_games": 3,
            "overrides": {},
        }
    )
    workload = AlphaZeroWorkload(settings)
    model = tmp_path / "m.pt"
    workload.selfplay(SelfplayRequest(key, tmp_path / "c.npz", games=2, seed=0))
    workload.export(ExportRequest(key, (tmp_path / "c.npz",), tmp_path / "w.npz", window_samples=1000))
    workload.train(TrainRequest(key, tmp_path / "w.npz", model, steps=2))
    match = tmp_path / "match.json"
    workload.evaluate(EvaluateRequest(key, Player.of_model(model), Player("mcts"), match, games=3))
    result = json.loads(match.read_text())
    assert all(game["adjudicated"] and game["moves"] == 12 for game in result["game_results"])
    assert result["wins"] + result["draws"] + result["losses"] == 6
