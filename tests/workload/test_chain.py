"""The built-in AlphaZero end to end on tic_tac_toe: selfplay, export, train (and resume), evaluate."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from zeroloop.workload.alphazero import AlphaZeroWorkload
from zeroloop.workload.datafiles import load_game_batch, load_window
from zeroloop.workload.network import load_model_file
from zeroloop.workload.protocol import (
    EvaluateRequest,
    Evidence,
    ExportRequest,
    Player,
    Progress,
    SelfplayRequest,
    TrainRequest,
    file_sha256,
)

KEY = "tic_tac_toe_2p"


def _check(evidence: Evidence, path: Path) -> None:
    (output,) = evidence.outputs
    assert output.path == path
    assert output.sha256 == file_sha256(path)
    assert output.size_bytes == path.stat().st_size > 0


def test_selfplay_export_train_evaluate(workload: AlphaZeroWorkload, tmp_path: Path) -> None:
    batches = [tmp_path / "b0.npz", tmp_path / "b1.npz"]
    for seed, path in enumerate(batches):
        evidence = workload.selfplay(SelfplayRequest(KEY, path, games=20, seed=seed))
        _check(evidence, path)
        arrays = load_game_batch(path, KEY)
        assert evidence.counts["games"] == int(arrays["num_games"]) == 20
        assert evidence.counts["positions"] == arrays["obs"].shape[0] >= 20 * 5
        assert evidence.counts["evaluations"] > 0
        # Outcomes are in the mover's frame (column 0: the mover), so within a game they alternate in sign.
        first = arrays["value"][arrays["game_index"] == 0]
        assert first.shape[1] == 2
        assert np.all(first[:-1, 0] == -first[1:, 0])
        assert np.all(first[:, 1] == -first[:, 0])

    window = tmp_path / "window.npz"
    evidence = workload.export(ExportRequest(KEY, tuple(batches), window, window_samples=150, seed=0))
    _check(evidence, window)
    arrays = load_window(window, KEY)
    counts = dict(evidence.counts)
    assert counts.pop("cpu_s") >= 0.0  # every operation reports the CPU it used (seconds)
    sizes = {key: counts.pop(key) for key in ("samples", "source_samples", "symmetries", "input_files")}
    assert sizes == {"samples": 1200, "source_samples": 150, "symmetries": 8, "input_files": 2}
    # The window's games: outcome shares (a win by either seat, or a draw) and game lengths.
    outcomes = counts["outcome_win_seat0"] + counts["outcome_win_seat1"] + counts["outcome_draw"]
    assert outcomes == pytest.approx(1.0) and 0 < counts["games"] <= 40
    assert 5 <= counts["length_p10"] <= counts["length_p50"] <= counts["length_p90"] <= 9
    # tic_tac_toe's three observation planes, then one to-move plane per player.
    assert arrays["obs"].shape == (1200, 5, 3, 3)
    legal = arrays["mask"].astype(np.bool_)
    assert np.all(arrays["policy"][~legal] == 0)

    reports: list[Progress] = []
    model = tmp_path / "model.pt"
    evidence = workload.train(TrainRequest(KEY, window, model, steps=20), progress=reports.append)
    _check(evidence, model)
    assert [r.step for r in reports] == [10, 20]
    assert all(r.samples_per_s > 0 and np.isfinite(r.loss) for r in reports)
    assert load_model_file(model)["step"] == 20
    # The round's learning diagnostics: losses, value accuracy by game stage, policy entropy.
    for name in ("policy_loss", "value_loss", "value_mse_opening", "value_mse_end", "policy_entropy"):
        assert np.isfinite(evidence.counts[name])
    assert 0.0 <= evidence.counts["value_accuracy_end"] <= 1.0
    assert 0.0 <= evidence.counts["policy_agreement"] <= 1.0

    # Asking for more steps on the same window resumes from the checkpoint instead of starting over.
    evidence = workload.train(TrainRequest(KEY, window, model, steps=30))
    assert evidence.counts["resumed_from_step"] == 20
    assert evidence.counts["steps_run"] == 10
    # The model's data is the window's 150 distinct positions; 10 steps x batch draws are not data.
    assert evidence.counts["samples"] == 150 and evidence.counts["window_rows"] == 1200
    assert evidence.counts["batch_draws"] == 10 * min(workload.params(KEY).train_batch_size, 1200)

    # Selfplay with the trained model records its sha256.
    batch = tmp_path / "b2.npz"
    workload.selfplay(SelfplayRequest(KEY, batch, games=2, model=model, seed=5))
    assert str(load_game_batch(batch)["model_sha256"]) == file_sha256(model)

    for opponent in (Player("random"), Player("mcts"), Player.of_model(model)):
        result_path = tmp_path / f"{opponent.kind}.json"
        evidence = workload.evaluate(EvaluateRequest(KEY, Player.of_model(model), opponent, result_path, games=16))
        _check(evidence, result_path)
        result = json.loads(result_path.read_text())
        assert result["wins"] + result["draws"] + result["losses"] == result["games"] == evidence.counts["games"]
        assert result["elo_low"] <= result["elo"] <= result["elo_high"]
        assert result["sprt"]["decision"] in ("continue", "accept_h0", "accept_h1")
        assert 0 < result["games"] <= 16


def test_selfplay_is_deterministic_for_a_seed(workload: AlphaZeroWorkload, tmp_path: Path) -> None:
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    workload.selfplay(SelfplayRequest(KEY, first, games=4, seed=11))
    workload.selfplay(SelfplayRequest(KEY, second, games=4, seed=11))
    a, b = load_game_batch(first), load_game_batch(second)
    for key in ("obs", "policy", "value", "game_lengths"):
        np.testing.assert_array_equal(a[key], b[key])


def test_match_against_random_stops_early_when_decided(workload: AlphaZeroWorkload, tmp_path: Path) -> None:
    result_path = tmp_path / "early.json"
    candidate = Player("mcts")
    workload.evaluate(EvaluateRequest(KEY, candidate, Player("random"), result_path, games=400))
    result = json.loads(result_path.read_text())
    assert result["stopped_early"] is True
    assert result["games"] < 400
    assert result["sprt"]["decision"] == "accept_h1"


def test_connect_four_selfplay_and_mirrored_export(workload: AlphaZeroWorkload, tmp_path: Path) -> None:
    key = "connect_four_2p"
    batch, window = tmp_path / "c4.npz", tmp_path / "c4w.npz"
    evidence = workload.selfplay(SelfplayRequest(key, batch, games=3, seed=0))
    positions = int(evidence.counts["positions"])
    assert load_game_batch(batch, key)["obs"].shape[1:] == (5, 6, 7)
    evidence = workload.export(ExportRequest(key, (batch,), window, window_samples=10_000))
    assert evidence.counts["samples"] == 2 * positions
    assert evidence.counts["symmetries"] == 2


def test_requests_and_evidence_cross_process_boundaries(workload: AlphaZeroWorkload, tmp_path: Path) -> None:
    request = EvaluateRequest(KEY, Player.of_model(tmp_path / "m.pt"), Player("random"), tmp_path / "r.json", 4)
    assert pickle.loads(pickle.dumps(request)) == request
    evidence = workload.selfplay(SelfplayRequest(KEY, tmp_path / "b.npz", games=1))
    assert pickle.loads(pickle.dumps(evidence)) == evidence


def test_training_rows_become_steps_of_the_workloads_own_batch(workload: AlphaZeroWorkload, tmp_path: Path) -> None:
    batch, window = tmp_path / "b.npz", tmp_path / "window.npz"
    workload.selfplay(SelfplayRequest(KEY, batch, games=4, seed=0))
    workload.export(ExportRequest(KEY, (batch,), window, window_samples=100, seed=0))
    size = workload.params(KEY).train_batch_size
    evidence = workload.train(TrainRequest(KEY, window, tmp_path / "model.pt", rows=2 * size + 1))
    assert evidence.counts["steps_run"] == 3  # ceil((2 x batch + 1) / batch), not the configured train_steps
    assert workload.params(KEY).train_steps != 3
