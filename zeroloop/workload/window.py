"""Export: the newest positions across game batches, augmented by the game's symmetries, as a training window.

Beside the sample arrays, the window keeps the search's value of each position
(`search_value`, a value target training may mix in; the outcome where a batch did not
record it), each position's move number in its game (`ply`) and that game's recorded
length (`length`), for the diagnostics by game stage (`diagnostics.py`); a window without
them still trains.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from zeroloop.errors import WorkloadError
from zeroloop.workload.datafiles import SAMPLE_KEYS, Arrays, load_game_batch
from zeroloop.workload.diagnostics import ply_and_length
from zeroloop.workload.games import Game
from zeroloop.workload.symmetry import symmetries_of

GAME_KEYS = ("ply", "length")
# Per position and the same for every symmetric copy: the outcome, the search's value, the game keys.
_UNMOVED = ("value", "search_value", *GAME_KEYS)


def build_window(game: Game, inputs: Sequence[Path], window_samples: int, rng: np.random.Generator) -> Arrays:
    """The newest `window_samples` positions of `inputs` (given oldest first) times every symmetry, shuffled."""
    if window_samples < 1:
        raise WorkloadError(f"window_samples must be at least 1, got {window_samples}")
    if not inputs:
        raise WorkloadError(f"export for {game.config_key} got no game batch files")
    chunks: list[Arrays] = []
    have = 0
    # Walk newest first and stop once the window is full, so old batches are never read.
    for path in reversed(list(inputs)):
        arrays = load_game_batch(path, game.config_key)
        if arrays["obs"].shape[1:] != game.obs_shape or arrays["policy"].shape[1] != game.num_actions:
            raise WorkloadError(
                f"game batch {path} has positions of shape {arrays['obs'].shape[1:]}, not {game.obs_shape}"
            )
        take = min(window_samples - have, arrays["obs"].shape[0])
        if take > 0:
            ply, length = ply_and_length(arrays)
            chunk = {key: arrays[key][-take:] for key in SAMPLE_KEYS}
            # A batch without the search's values (older, or merged from such) stands in its outcomes.
            searched = arrays.get("search_value")
            if searched is None or searched.shape != arrays["value"].shape:
                searched = arrays["value"]
            chunk["search_value"] = searched[-take:]
            chunks.append({**chunk, "ply": ply[-take:], "length": length[-take:]})
            have += take
        if have >= window_samples:
            break
    if have == 0:
        raise WorkloadError(f"game batches {[str(p) for p in inputs]} hold no positions")
    chunks.reverse()
    keys = (*SAMPLE_KEYS, "search_value", *GAME_KEYS)
    base = {key: np.concatenate([chunk[key] for chunk in chunks]) for key in keys}
    symmetries = symmetries_of(game)
    parts: dict[str, list[npt.NDArray[np.generic]]] = {key: [] for key in keys}
    for index in range(len(symmetries)):
        obs, policy = symmetries.apply(index, base["obs"], base["policy"])
        _, mask = symmetries.apply(index, base["obs"][:0], base["mask"])
        parts["obs"].append(obs)
        parts["policy"].append(policy)
        parts["mask"].append(mask)
        for key in _UNMOVED:
            parts[key].append(base[key])
    order = rng.permutation(have * len(symmetries))
    window: Arrays = {key: np.concatenate(parts[key])[order] for key in keys}
    window["config_key"] = np.asarray(game.config_key)
    window["source_samples"] = np.asarray(have, dtype=np.int64)
    window["symmetries"] = np.asarray(len(symmetries), dtype=np.int64)
    return window
