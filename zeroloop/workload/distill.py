"""Distillation: a smaller network trained on a stronger one's data and targets (Hinton et al. 2015).

The student sees the positions of a training window (the teacher's own, usually) and
learns the teacher's policy, its network's move distribution over the legal moves, which
carries more than the search's visit counts of one game, and a value target that mixes
the teacher's value (`value_mix`) with the game's outcome. Training itself is the loop's
own (`zeroloop.workload.train.train_net`): SGD with the config's settings, checkpointed
and resumable, with the same diagnostics, where "policy agreement" then reads as
agreement with the teacher.
"""

from __future__ import annotations

import numpy as np
import torch

from zeroloop.errors import WorkloadError
from zeroloop.workload.datafiles import Arrays
from zeroloop.workload.network import PolicyValueNet

_BATCH_ROWS = 1024  # positions the teacher labels per forward pass


def parameter_count(net: torch.nn.Module) -> int:
    """How many numbers the network learns (its size, whatever its shape)."""
    return sum(int(p.numel()) for p in net.parameters())


def teacher_targets(teacher: PolicyValueNet, window: Arrays, value_mix: float) -> Arrays:
    """`window` with its policy and value targets replaced by the teacher's (the value mixed with the outcome).

    The teacher's policy is its softmax over the legal moves (the window's mask), so an
    illegal move is never a target; a position without legal moves keeps its own target.
    """
    if not 0.0 <= value_mix <= 1.0:
        raise WorkloadError(f"value_mix must be within 0 and 1, got {value_mix}")
    obs, mask = window["obs"], window["mask"].astype(bool)
    policies, values = [], []
    was_training = teacher.training
    teacher.eval()
    try:
        with torch.no_grad():
            for start in range(0, obs.shape[0], _BATCH_ROWS):
                batch = torch.from_numpy(obs[start : start + _BATCH_ROWS].astype(np.float32))
                legal = torch.from_numpy(mask[start : start + _BATCH_ROWS])
                logits, value = teacher(batch)
                policies.append(torch.softmax(logits.masked_fill(~legal, float("-inf")), dim=1).numpy())
                values.append(value.numpy())
    finally:
        teacher.train(was_training)
    policy = np.concatenate(policies).astype(np.float32)
    none_legal = ~mask.any(axis=1)
    policy[none_legal] = window["policy"][none_legal]
    value = value_mix * np.concatenate(values) + (1.0 - value_mix) * window["value"].astype(np.float32)
    return {**window, "policy": policy, "value": value.astype(np.float32)}
