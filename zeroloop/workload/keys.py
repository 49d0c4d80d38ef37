"""Config keys and their variants: `connect_four_2p~t1v3` is a variant of `connect_four_2p`.

A variant (a member of a tune's population, zeroloop.tune) plays its base key's game,
with settings of its own that travel inside its model files (`TUNED_KEY`), so a worker
needs nothing beyond the files its job names. Plain names, importable without OpenSpiel.
"""

from __future__ import annotations

VARIANT_MARK = "~"
# The model-file entry holding the AlphaZero parameters a variant's lineage plays and trains with,
# over the base key's own (zeroloop.workload.params).
TUNED_KEY = "tuned"


def base_key(config_key: str) -> str:
    """The config key a variant key belongs to (`connect_four_2p~t1v3` -> `connect_four_2p`); others unchanged."""
    return config_key.split(VARIANT_MARK, 1)[0]


def is_variant(config_key: str) -> bool:
    """Whether `config_key` names a variant of another key."""
    return VARIANT_MARK in config_key


def variant_key(config_key: str, name: str) -> str:
    """The key of variant `name` of `config_key` (e.g. `t1v3`)."""
    return f"{base_key(config_key)}{VARIANT_MARK}{name}"
