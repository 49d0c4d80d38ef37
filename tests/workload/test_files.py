"""Truncated, corrupt or malformed files give a WorkloadError naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from zeroloop.errors import WorkloadError
from zeroloop.workload.alphazero import AlphaZeroWorkload
from zeroloop.workload.datafiles import load_game_batch, load_window, write_npz
from zeroloop.workload.network import load_model_file, load_net, new_net, save_model
from zeroloop.workload.protocol import SelfplayRequest, TrainRequest


@pytest.fixture
def batch(workload: AlphaZeroWorkload, tmp_path: Path) -> Path:
    path = tmp_path / "batch.npz"
    workload.selfplay(SelfplayRequest("tic_tac_toe_2p", path, games=2, seed=3))
    return path


def test_valid_batch_loads(batch: Path) -> None:
    arrays = load_game_batch(batch, "tic_tac_toe_2p")
    assert int(arrays["num_games"]) == 2
    assert arrays["obs"].shape[1:] == (5, 3, 3)
    assert arrays["value"].shape == (arrays["obs"].shape[0], 2)
    np.testing.assert_allclose(arrays["policy"].sum(axis=1), 1.0, rtol=1e-5)


def test_truncated_npz_names_the_file(batch: Path, tmp_path: Path) -> None:
    broken = tmp_path / "truncated.npz"
    broken.write_bytes(batch.read_bytes()[: batch.stat().st_size // 2])
    with pytest.raises(WorkloadError, match=r"truncated.npz"):
        load_game_batch(broken)


def test_garbage_npz_names_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "garbage.npz"
    broken.write_bytes(b"this is not a zip file at all" * 10)
    with pytest.raises(WorkloadError, match=r"garbage.npz"):
        load_window(broken)


def test_npz_with_corrupt_member_names_the_file(batch: Path, tmp_path: Path) -> None:
    data = bytearray(batch.read_bytes())
    middle = len(data) // 3
    data[middle : middle + 64] = bytes(64)
    broken = tmp_path / "flipped.npz"
    broken.write_bytes(bytes(data))
    with pytest.raises(WorkloadError, match=r"flipped.npz"):
        load_game_batch(broken)


def test_npz_missing_arrays_or_bad_shapes_are_named(tmp_path: Path) -> None:
    partial = tmp_path / "partial.npz"
    write_npz(partial, {"obs": np.zeros((2, 3, 3, 3), np.float32)})
    with pytest.raises(WorkloadError, match=r"partial.npz lacks arrays \['policy'"):
        load_game_batch(partial)
    bad = tmp_path / "bad.npz"
    write_npz(
        bad,
        {
            "obs": np.zeros((2, 3, 3, 3), np.float32),
            "policy": np.zeros((3, 9), np.float32),
            "value": np.zeros(2, np.float32),
            "mask": np.zeros((2, 9), np.bool_),
            "config_key": np.asarray("tic_tac_toe_2p"),
            "source_samples": np.asarray(2),
            "symmetries": np.asarray(1),
        },
    )
    with pytest.raises(WorkloadError, match=r"bad.npz is malformed: policy") as caught:
        load_window(bad)
    assert "value has shape (2,), expected (2, players) with 2 to 6 players" in str(caught.value)


def test_batch_of_another_config_is_refused(batch: Path) -> None:
    with pytest.raises(WorkloadError, match=r"connect_four_2p"):
        load_game_batch(batch, "connect_four_2p")


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match=r"nowhere.npz does not exist"):
        load_game_batch(tmp_path / "nowhere.npz")
    with pytest.raises(WorkloadError, match=r"nowhere.pt does not exist"):
        load_model_file(tmp_path / "nowhere.pt")


def test_truncated_and_garbage_model_files_are_named(workload: AlphaZeroWorkload, tmp_path: Path) -> None:
    game = workload.game("tic_tac_toe_2p")
    model = tmp_path / "model.pt"
    save_model(model, new_net(workload.net_shape(game), 0), "tic_tac_toe_2p")
    net, payload = load_net(model, "tic_tac_toe_2p")
    assert payload["config_key"] == "tic_tac_toe_2p"
    assert net.shape == workload.net_shape(game)
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(model.read_bytes()[:100])
    with pytest.raises(WorkloadError, match=r"cut.pt"):
        load_model_file(truncated)
    garbage = tmp_path / "junk.pt"
    garbage.write_bytes(b"\x00" * 500)
    with pytest.raises(WorkloadError, match=r"junk.pt"):
        load_model_file(garbage)
    with pytest.raises(WorkloadError, match=r"connect_four_2p"):
        load_net(model, "connect_four_2p")


def test_training_on_a_corrupt_window_names_it(workload: AlphaZeroWorkload, tmp_path: Path) -> None:
    window = tmp_path / "window.npz"
    window.write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(WorkloadError, match=r"window.npz"):
        workload.train(TrainRequest("tic_tac_toe_2p", window, tmp_path / "out.pt"))
    assert not (tmp_path / "out.pt").exists()
