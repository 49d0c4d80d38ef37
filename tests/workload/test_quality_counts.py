"""The counts a selfplay batch carries for the quality monitor: draws and the search policy's entropy."""

from __future__ import annotations

import math

import numpy as np

from zeroloop.pipeline.quality import figures
from zeroloop.workload.alphazero import quality_counts


def test_draws_and_policy_entropy_are_counted_from_the_batch() -> None:
    uniform, certain = np.full(9, 1 / 9), np.eye(9)[4]
    arrays = {
        # game 0 drawn (both players 0), game 1 won by the first mover, game 2 a three-way tie
        "value": np.array([[0, 0], [0, 0], [1, -1], [-1, 1], [0.5, 0.5]], dtype=np.float32),
        "game_index": np.array([0, 0, 1, 1, 2], dtype=np.int32),
        "policy": np.stack([uniform, certain, uniform, certain, certain]).astype(np.float32),
    }
    counts = quality_counts(arrays)
    assert counts["draws"] == 2 and counts["distinct_outcomes"] == 3
    assert math.isclose(counts["policy_entropy"], 2 * math.log(9) / 5, rel_tol=1e-5)
    pooled = figures([{"games": 3, "positions": 5, **counts}])
    assert math.isclose(pooled["draw_rate"], 2 / 3)
    assert pooled["value_mse"] is None  # not recorded: never guessed
