"""The AlphaZero parameters of one config key: WorkloadSettings with that key's overrides applied.

No default lives here: every value comes from `WorkloadSettings`, and a per-config entry
in `WorkloadSettings.overrides` replaces some of them for one config key only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from zeroloop.config import WorkloadSettings
from zeroloop.errors import WorkloadError
from zeroloop.workload.keys import base_key


@dataclass(frozen=True)
class AlphaZeroParams:
    """Network shape, search, training and evaluation parameters for one config key."""

    blocks: int
    channels: int
    value_hidden: int
    simulations: int
    c_puct: float
    dirichlet_alpha: float
    dirichlet_epsilon: float
    temperature_moves: int
    parallel_games: int
    train_batch_size: int
    train_steps: int
    search_value_weight: float
    learning_rate: float
    momentum: float
    weight_decay: float
    checkpoint_every_steps: int
    progress_every_steps: int
    eval_simulations: int
    eval_temperature_moves: int
    eval_opening_moves: int
    eval_parallel_games: int
    baseline_simulations: int
    baseline_rollouts: int
    sprt_elo0: float
    sprt_elo1: float
    sprt_alpha: float
    sprt_beta: float
    elo_confidence: float
    gumbel: bool
    gumbel_considered: int
    gumbel_c_visit: float
    gumbel_c_scale: float
    full_search_share: float
    fast_simulations: int
    tree_reuse: bool
    selfplay_max_moves: int
    baseline_rollout_moves: int
    eval_max_moves: int

    @classmethod
    def resolve(
        cls, settings: WorkloadSettings, config_key: str, tuned: Mapping[str, float | bool] | None = None
    ) -> AlphaZeroParams:
        """The parameters for `config_key`; an override naming an unknown parameter is a WorkloadError.

        A variant key (`connect_four_2p~t1v3`) takes its base key's overrides, then its own, then
        `tuned`: the settings its model file carries (zeroloop.workload.keys.TUNED_KEY).
        """
        names = [f.name for f in dataclasses.fields(cls)]
        values: dict[str, float | bool] = {name: getattr(settings, name) for name in names}
        layers: list[tuple[str, Mapping[str, float | bool]]] = [
            (f"workload.overrides[{key!r}]", settings.overrides.get(key, {}))
            for key in dict.fromkeys((base_key(config_key), config_key))
        ]
        layers.append((f"the tuned settings of {config_key}'s model", tuned or {}))
        for where, overrides in layers:
            unknown = sorted(set(overrides) - set(names))
            if unknown:
                raise WorkloadError(f"{where} names unknown parameters {unknown}; known: {', '.join(names)}")
            values.update(overrides)
        # Integers stay integers: an override given as 4.0 in TOML means 4 steps, not a float count.
        kinds = {"int": int, "bool": bool, "float": float}
        typed = {f.name: kinds[str(f.type)](values[f.name]) for f in dataclasses.fields(cls)}
        return cls(**typed)
