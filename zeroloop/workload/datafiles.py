"""Game batch and training window files: compressed NPZ, written atomically, validated on load.

A game batch holds every position of some selfplay games:

    obs (S, C, H, W) float32   input planes of the player to move (observation, then to-move planes)
    policy (S, A) float32      MCTS visit distribution (sums to 1)
    value (S, P) float32       final outcome per player (P players) in [-1, 1], in the mover's frame:
                               column k is the player k seats after the player to move
    mask (S, A) bool           legal actions
    game_index (S,) int32      which game of the batch the position belongs to
    game_lengths (G,) int32    recorded positions per game (fewer than its moves with playout caps)
    game_moves (G,) int32      moves per game (absent in batches from before playout caps)
    config_key, model_sha256   0-d strings; num_games 0-d int

A training window holds obs, policy, value and mask (already augmented by symmetries)
plus config_key, source_samples and symmetries. A truncated, corrupt or malformed file
is a WorkloadError naming the file and what is wrong.
"""

from __future__ import annotations

import os
import pickle
import zipfile
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt

from zeroloop.errors import WorkloadError

Arrays = dict[str, npt.NDArray[np.generic]]

SAMPLE_KEYS = ("obs", "policy", "value", "mask")
GAME_BATCH_KEYS = (*SAMPLE_KEYS, "game_index", "game_lengths", "config_key", "model_sha256", "num_games")
WINDOW_KEYS = (*SAMPLE_KEYS, "config_key", "source_samples", "symmetries")


def write_npz(path: Path, arrays: Arrays) -> None:
    """Write `arrays` as a compressed NPZ to a temporary file, then rename it to `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as handle:
            np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_npz(path: Path, required: tuple[str, ...] = ()) -> Arrays:
    """Load every array of the NPZ at `path`; a missing, unreadable or incomplete file is a WorkloadError."""
    path = Path(path)
    if not path.is_file():
        raise WorkloadError(f"NPZ file {path} does not exist")
    try:
        # Opened here rather than by np.load, which leaks its handle when the zip is unreadable.
        with path.open("rb") as handle, np.load(handle, allow_pickle=False) as data:
            arrays: Arrays = {key: data[key] for key in data.files}
    except (zipfile.BadZipFile, zlib.error, pickle.UnpicklingError, EOFError, ValueError, OSError, KeyError) as exc:
        raise WorkloadError(f"NPZ file {path} is truncated or corrupt: {exc}") from None
    missing = [key for key in required if key not in arrays]
    if missing:
        raise WorkloadError(f"NPZ file {path} lacks arrays {missing}; it has {sorted(arrays)}")
    return arrays


def _check_samples(path: Path, arrays: Arrays, config_key: str | None) -> None:
    obs, policy, value, mask = (arrays[key] for key in SAMPLE_KEYS)
    count = obs.shape[0] if obs.ndim == 4 else -1
    problems = []
    if obs.ndim != 4:
        problems.append(f"obs has shape {obs.shape}, expected (samples, C, H, W)")
    if policy.ndim != 2 or policy.shape[0] != count:
        problems.append(f"policy has shape {policy.shape}, expected ({count}, actions)")
    if value.ndim != 2 or value.shape[0] != count or not 2 <= value.shape[1] <= 6:
        problems.append(f"value has shape {value.shape}, expected ({count}, players) with 2 to 6 players")
    if mask.shape != policy.shape or mask.dtype != np.bool_:
        problems.append(f"mask has shape {mask.shape} dtype {mask.dtype}, expected bool {policy.shape}")
    if problems:
        raise WorkloadError(f"NPZ file {path} is malformed: " + "; ".join(problems))
    stored_key = str(arrays["config_key"])
    if config_key is not None and stored_key != config_key:
        raise WorkloadError(f"NPZ file {path} holds {stored_key!r} data, not {config_key!r}")


def load_game_batch(path: Path, config_key: str | None = None) -> Arrays:
    """Load and validate a game batch (optionally checking it belongs to `config_key`)."""
    arrays = read_npz(path, GAME_BATCH_KEYS)
    _check_samples(Path(path), arrays, config_key)
    lengths = arrays["game_lengths"]
    if int(lengths.sum()) != arrays["obs"].shape[0] or lengths.shape != (int(arrays["num_games"]),):
        raise WorkloadError(f"NPZ file {path} is malformed: game_lengths do not match num_games and positions")
    return arrays


def load_window(path: Path, config_key: str | None = None) -> Arrays:
    """Load and validate a training window (optionally checking it belongs to `config_key`)."""
    arrays = read_npz(path, WINDOW_KEYS)
    _check_samples(Path(path), arrays, config_key)
    if arrays["obs"].shape[0] == 0:
        raise WorkloadError(f"NPZ file {path} is a training window without samples")
    return arrays
