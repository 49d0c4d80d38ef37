"""Shared fixtures of the workload tests: tiny AlphaZero settings so every test runs in seconds."""

from __future__ import annotations

import pytest

from zeroloop.config import WorkloadSettings
from zeroloop.workload.alphazero import AlphaZeroWorkload


@pytest.fixture
def tiny_settings() -> WorkloadSettings:
    """A one-block, 16-channel network with few simulations; one torch thread, which is fastest for tiny nets.

    Inference in float32: `auto` would pick bfloat16 on some CPUs only, and the games would
    then differ from one machine to the next.
    """
    return WorkloadSettings(
        torch_threads=1,
        inference_precision="float32",
        blocks=1,
        channels=16,
        value_hidden=16,
        simulations=12,
        parallel_games=16,
        train_batch_size=64,
        train_steps=30,
        checkpoint_every_steps=10,
        progress_every_steps=10,
        eval_simulations=12,
        eval_parallel_games=8,
        baseline_simulations=12,
    )


@pytest.fixture
def workload(tiny_settings: WorkloadSettings) -> AlphaZeroWorkload:
    """The built-in workload with tiny settings."""
    return AlphaZeroWorkload(tiny_settings)
