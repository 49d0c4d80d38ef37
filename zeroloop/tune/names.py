"""The names a tune gives: its variants' config keys, its population key, its trials' states."""

from __future__ import annotations

from typing import Any

from zeroloop.workload.keys import variant_key

RUNNING = "running"  # a tune or a trial still going; a trial then ends ("ended") or is dropped ("dropped")
FINISHED, STOPPED = "finished", "stopped"


def population_key(tune: Any) -> str:
    """Where the matches between a tune's variants are recorded (`connect_four_2p~t1`, a key with no pipeline)."""
    return variant_key(tune["config_key"], f"t{tune['id']}")


def variant_name(tune: Any, number: int) -> str:
    """The config key of a tune's variant `number` (`connect_four_2p~t1v3`): a pipeline of its own."""
    return variant_key(tune["config_key"], f"t{tune['id']}v{number}")
