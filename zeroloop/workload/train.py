"""Training: SGD on a training window with policy cross-entropy plus value squared error, checkpointed.

The value loss is the mean squared error over the value vector (one entry per player, in
the mover's frame), so a two-player game's loss has the same scale as a single value's.
Its target is the game's outcome, with `search_value_weight` of the search's own value of
the position mixed in (`value_targets`).

The output model file doubles as the checkpoint: every `checkpoint_every_steps` steps it
is rewritten atomically with the optimizer state, the step reached and the window's
sha256, so a run cut off by a lost machine resumes from there on the same window.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from zeroloop.errors import WorkloadError
from zeroloop.workload.datafiles import Arrays
from zeroloop.workload.diagnostics import training_figures
from zeroloop.workload.network import PolicyValueNet, load_model_file, load_net, resolve_device, save_model
from zeroloop.workload.params import AlphaZeroParams
from zeroloop.workload.protocol import Progress, ProgressCallback

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What a training run did and on what data, with the final mean loss.

    `samples` is how many distinct positions from selfplay the window holds (before its
    symmetry augmentation); `window_rows` how many rows it has after augmentation; and
    `batch_draws` is steps run x batch size: rows drawn, with repeats, not data.
    """

    steps_run: int
    step: int
    samples: int
    window_rows: int
    batch_draws: int
    loss: float
    resumed_from_step: int
    diagnostics: dict[str, float] = field(default_factory=dict)


def _resume_point(output: Path, config_key: str, window_sha256: str) -> int:
    """The step an interrupted run on the same window reached, or 0 when there is nothing to resume."""
    if not output.is_file():
        return 0
    try:
        payload = load_model_file(output)
    except WorkloadError as exc:
        log.warning("not resuming from %s: %s", output, exc)
        return 0
    if payload.get("config_key") != config_key or payload.get("window_sha256") != window_sha256:
        return 0
    return int(payload.get("step", 0))


def value_targets(window: Arrays, search_weight: float) -> npt.NDArray[np.float32]:
    """The value target of every window row: the outcome, with `search_weight` of the search's own value mixed in.

    A window without `search_value` (from before it was recorded) trains on the outcome alone.
    """
    outcome = window["value"].astype(np.float32)
    searched = window.get("search_value")
    if search_weight <= 0 or searched is None or searched.shape != outcome.shape:
        return outcome
    mixed: npt.NDArray[np.float32] = (1.0 - search_weight) * outcome + search_weight * searched.astype(np.float32)
    return mixed


def train_net(
    net: PolicyValueNet,
    window: Arrays,
    *,
    params: AlphaZeroParams,
    steps: int,
    output: Path,
    config_key: str,
    window_sha256: str,
    device: str,
    seed: int,
    progress: ProgressCallback,
    carry: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train `net` for `steps` optimizer steps in total, resuming from `output` when it is a checkpoint.

    `carry` holds further entries every file written keeps (a variant's tuned settings, a distillation's teacher).
    """
    optimizer = torch.optim.SGD(
        net.parameters(), lr=params.learning_rate, momentum=params.momentum, weight_decay=params.weight_decay
    )
    start = _resume_point(output, config_key, window_sha256)
    if start:
        net, payload = load_net(output, config_key)
        optimizer = torch.optim.SGD(
            net.parameters(), lr=params.learning_rate, momentum=params.momentum, weight_decay=params.weight_decay
        )
        optimizer.load_state_dict(payload["optimizer"])
        log.info("resuming %s training from step %d of %d", config_key, start, steps)
    target = resolve_device(device)
    net.to(target).train()
    # The whole window moves to the device once; batches are then gathered there.
    obs = torch.from_numpy(window["obs"].astype(np.float32)).to(target)
    policy = torch.from_numpy(window["policy"].astype(np.float32)).to(target)
    value = torch.from_numpy(value_targets(window, params.search_value_weight)).to(target)
    count = obs.shape[0]
    batch = min(params.train_batch_size, count)
    generator = torch.Generator().manual_seed(seed + start)
    totals = np.zeros(3)
    interval_start = time.perf_counter()
    interval_steps = 0
    mean_loss = float("nan")
    last_losses: dict[str, float] = {}

    def checkpoint(step: int) -> None:
        extra = {**(carry or {}), "step": step, "window_sha256": window_sha256, "optimizer": optimizer.state_dict()}
        save_model(output, net, config_key, extra)

    for step in range(start + 1, steps + 1):
        index = torch.randint(count, (batch,), generator=generator).to(target)
        x, pi, z = obs[index], policy[index], value[index]
        logits, v = net(x)
        policy_loss = -(pi * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
        value_loss = F.mse_loss(v, z)
        loss = policy_loss + value_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        totals += (loss.item(), policy_loss.item(), value_loss.item())
        if not math.isfinite(totals[0]):
            raise WorkloadError(
                f"training of {config_key} diverged: the loss is {loss.item()} at step {step} "
                f"(learning rate {params.learning_rate:g}): lower the learning rate"
            )
        interval_steps += 1
        if step % params.progress_every_steps == 0 or step == steps:
            elapsed = max(time.perf_counter() - interval_start, 1e-9)
            mean = totals / interval_steps
            mean_loss = float(mean[0])
            last_losses = {"policy_loss": float(mean[1]), "value_loss": float(mean[2])}
            report = Progress(step, steps, mean_loss, float(mean[1]), float(mean[2]), interval_steps * batch / elapsed)
            log.info(
                "train %s step %d/%d loss %.4f (%.0f samples/s)",
                config_key,
                step,
                steps,
                mean_loss,
                report.samples_per_s,
            )
            progress(report)
            totals[:] = 0
            interval_steps = 0
            interval_start = time.perf_counter()
        if step % params.checkpoint_every_steps == 0 and step < steps:
            checkpoint(step)
    net.eval()
    checkpoint(steps)
    ran = max(steps - start, 0)
    diagnostics = {**last_losses, **training_figures(net, window, target, seed)}
    return TrainResult(ran, steps, int(window["source_samples"]), count, ran * batch, mean_loss, start, diagnostics)
