"""A variant's model file: weights, and the settings its lineage plays and trains with (zeroloop.tune).

A tune's population member is a pair (weights, settings), as in population-based
training. Both travel in one model file: the settings under `TUNED_KEY`, read by the
workload whenever the file is the model a selfplay or training job starts from, and
carried into every model trained from it. So a member starts (a fresh network of its
proposed shape, or a copy of a model), is copied (the weights and settings of a stronger
member) or perturbed (the same weights, new settings) by writing one such file, and a
worker needs nothing but the files its job names.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from zeroloop.config import WorkloadSettings
from zeroloop.errors import WorkloadError
from zeroloop.workload.alphazero import AlphaZeroWorkload
from zeroloop.workload.keys import TUNED_KEY
from zeroloop.workload.network import NetShape, load_model_file, new_net, save_model, tuned_settings


def write_member(
    settings: WorkloadSettings,
    config_key: str,
    output: Path,
    tuned: Mapping[str, float | bool],
    *,
    source: Path | None = None,
    seed: int = 0,
) -> dict[str, int]:
    """Write a model file for variant `config_key` with `tuned` settings: `source`'s weights, or a fresh network.

    A fresh network takes its shape from the settings (`tuned` over the config's own). A copy
    keeps its weights' shape, so `tuned` may not ask for another. Returns the network's shape
    (blocks, channels).
    """
    workload = AlphaZeroWorkload(settings)
    game = workload.game(config_key)
    params = workload.params(config_key, tuned)  # refuses a name that is no parameter
    if source is None:
        shape = NetShape(
            game.obs_shape, game.num_actions, params.blocks, params.channels, params.value_hidden, game.num_players
        )
        net = new_net(shape, seed)
    else:
        net, _sha, _old = workload.load_member(game, source, seed)
        for name in ("blocks", "channels", "value_hidden"):
            if name in tuned and int(tuned[name]) != getattr(net.shape, name):
                raise WorkloadError(
                    f"model {source} has {name} = {getattr(net.shape, name)}; a copy keeps its shape, "
                    f"not {name} = {tuned[name]}"
                )
    save_model(output, net, config_key, {TUNED_KEY: dict(tuned)})
    return {"blocks": net.shape.blocks, "channels": net.shape.channels}


def member_settings(path: Path) -> dict[str, float | bool]:
    """The tuned settings a model file carries (empty for a plain model)."""
    return tuned_settings(load_model_file(path))
