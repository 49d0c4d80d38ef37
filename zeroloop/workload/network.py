"""The residual policy-value network and the model file that stores it.

A model file is a `torch.save` of a plain dict: format tag and version, config key,
network shape, the state dict, and for resumable training the optimizer state, step
reached and the sha256 of the training window. It is written to a temporary file and
renamed, so a reader never sees half a model; a truncated or corrupt file is a
WorkloadError naming it.
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from copy import deepcopy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from zeroloop.errors import WorkloadError
from zeroloop.workload.games import BoolArray, FloatArray
from zeroloop.workload.keys import TUNED_KEY, base_key

log = logging.getLogger(__name__)

MODEL_FORMAT = "zeroloop-alphazero-model"
# 2: to-move input planes and one value output per player.
MODEL_VERSION = 2


@dataclass(frozen=True)
class NetShape:
    """The architecture of a network: input planes (C, H, W), action count, residual blocks, channels, players."""

    obs_shape: tuple[int, int, int]
    num_actions: int
    blocks: int
    channels: int
    value_hidden: int
    num_players: int = 2


class _Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        # A plain Module: an inference copy replaces each norm by an identity (`inference_copy`).
        self.bn1: nn.Module = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2: nn.Module = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(y)))


class PolicyValueNet(nn.Module):
    """An AlphaZero residual tower with a policy head (logits over actions) and a value head.

    The value head has one tanh output per player, in the mover's frame: output k is the
    value for the player k seats after the player to move.
    """

    def __init__(self, shape: NetShape) -> None:
        super().__init__()
        self.shape = shape
        planes, height, width = shape.obs_shape
        area = height * width
        # A board's heads squeeze each cell to 2 (policy) and 1 (value) planes, as in AlphaZero; a flat
        # observation (chinese_checkers: C x 1 x 1) keeps the tower's width, or its 727 move
        # logits would be drawn from two numbers.
        policy_planes, value_planes = (2, 1) if area > 1 else (shape.channels, shape.channels)
        self.stem = nn.Sequential(
            nn.Conv2d(planes, shape.channels, 3, padding=1, bias=False), nn.BatchNorm2d(shape.channels), nn.ReLU()
        )
        self.tower = nn.Sequential(*[_Block(shape.channels) for _ in range(shape.blocks)])
        self.policy_conv = nn.Sequential(
            nn.Conv2d(shape.channels, policy_planes, 1, bias=False), nn.BatchNorm2d(policy_planes), nn.ReLU()
        )
        self.policy_fc = nn.Linear(policy_planes * area, shape.num_actions)
        self.value_conv = nn.Sequential(
            nn.Conv2d(shape.channels, value_planes, 1, bias=False), nn.BatchNorm2d(value_planes), nn.ReLU()
        )
        self.value_fc = nn.Sequential(
            nn.Linear(value_planes * area, shape.value_hidden),
            nn.ReLU(),
            nn.Linear(shape.value_hidden, shape.num_players),
            nn.Tanh(),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Policy logits (batch, actions) and values in [-1, 1] (batch, players) for observations (batch, C, H, W)."""
        h = self.tower(self.stem(x))
        logits = self.policy_fc(self.policy_conv(h).flatten(1))
        value = self.value_fc(self.value_conv(h).flatten(1))
        return logits, value


Precision = Literal["auto", "float32", "bfloat16"]


def inference_dtype(precision: Precision, device: torch.device) -> torch.dtype:
    """The dtype inference runs in: `auto` is bfloat16 on a CPU with native bfloat16 arithmetic
    (AVX512-BF16 or AMX, where it doubles the forward passes per CPU-second), else float32."""
    if precision == "float32":
        return torch.float32
    if precision == "bfloat16":
        return torch.bfloat16
    if device.type != "cpu":
        return torch.float32
    native = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return torch.bfloat16 if any(check is not None and check() for check in native) else torch.float32


def inference_copy(net: PolicyValueNet, dtype: torch.dtype) -> PolicyValueNet:
    """A copy of `net` for inference only: every batch norm folded into its convolution, in `dtype`.

    The same function as `net` in eval mode (up to rounding), with a third fewer kernels
    per forward pass; the original is left untouched (training goes on with it).
    """
    copy = deepcopy(net).eval()
    for sequence in (copy.stem, copy.policy_conv, copy.value_conv):
        convolution, norm = sequence[0], sequence[1]
        assert isinstance(convolution, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)
        sequence[0], sequence[1] = fuse_conv_bn_eval(convolution, norm), nn.Identity()
    for block in copy.tower:
        assert isinstance(block, _Block) and isinstance(block.bn1, nn.BatchNorm2d)
        assert isinstance(block.bn2, nn.BatchNorm2d)
        block.conv1, block.bn1 = fuse_conv_bn_eval(block.conv1, block.bn1), nn.Identity()
        block.conv2, block.bn2 = fuse_conv_bn_eval(block.conv2, block.bn2), nn.Identity()
    return copy.to(dtype)


class Evaluator:
    """Batched inference: legal-masked priors and values for a stack of observations.

    It runs an inference copy of the network (`inference_copy`: batch norms folded, in the
    dtype `precision` resolves to), so it does not follow later changes to `net`.
    """

    def __init__(self, net: PolicyValueNet, device: str, precision: Precision = "auto") -> None:
        self.device = resolve_device(device)
        self.dtype = inference_dtype(precision, self.device)
        self.net = inference_copy(net, self.dtype).to(self.device)

    @torch.inference_mode()
    def __call__(self, obs: FloatArray, mask: BoolArray) -> tuple[FloatArray, FloatArray]:
        """Priors (batch, actions) summing to 1 over legal actions, and values (batch, players), mover first."""
        non_blocking = self.device.type == "cuda"
        x = torch.from_numpy(obs).to(self.device, dtype=self.dtype, non_blocking=non_blocking)
        logits, value = self.net(x)
        legal = torch.from_numpy(mask).to(self.device, non_blocking=non_blocking)
        logits = logits.float().masked_fill(~legal, float("-inf"))
        priors = torch.softmax(logits, dim=1)
        return priors.cpu().numpy().astype(np.float32), value.float().cpu().numpy().astype(np.float32)


def save_model(path: Path, net: PolicyValueNet, config_key: str, extra: dict[str, Any] | None = None) -> None:
    """Write `net` with its metadata (and `extra`, e.g. optimizer state) to `path` atomically."""
    payload: dict[str, Any] = {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "config_key": config_key,
        "shape": {**asdict(net.shape), "obs_shape": list(net.shape.obs_shape)},
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        **(extra or {}),
    }
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_model_file(path: Path) -> dict[str, Any]:
    """Read and check a model file; a missing, truncated, corrupt or foreign file is a WorkloadError naming it."""
    path = Path(path)
    if not path.is_file():
        raise WorkloadError(f"model file {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, RuntimeError, ValueError, OSError) as exc:
        raise WorkloadError(f"model file {path} is truncated or corrupt: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise WorkloadError(f"model file {path} is not a zeroloop AlphaZero model (no format tag {MODEL_FORMAT!r})")
    if payload.get("version") != MODEL_VERSION:
        raise WorkloadError(f"model file {path} has version {payload.get('version')}, this code reads {MODEL_VERSION}")
    return payload


def load_net(path: Path, config_key: str) -> tuple[PolicyValueNet, dict[str, Any]]:
    """The network stored in `path` and its file payload; the file must belong to `config_key`."""
    payload = load_model_file(path)
    # Variants of one key (zeroloop.workload.keys) play the same game: their models meet in matches and are copied.
    if base_key(str(payload.get("config_key"))) != base_key(config_key):
        raise WorkloadError(f"model file {path} is for {payload.get('config_key')!r}, not {config_key!r}")
    raw = dict(payload["shape"])
    shape = NetShape(
        obs_shape=(int(raw["obs_shape"][0]), int(raw["obs_shape"][1]), int(raw["obs_shape"][2])),
        num_actions=int(raw["num_actions"]),
        blocks=int(raw["blocks"]),
        channels=int(raw["channels"]),
        value_hidden=int(raw["value_hidden"]),
        num_players=int(raw["num_players"]),
    )
    net = PolicyValueNet(shape)
    try:
        net.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError) as exc:
        raise WorkloadError(f"model file {path} does not match its declared network shape: {exc}") from None
    return net, payload


def resolve_device(name: str) -> torch.device:
    """The torch device for a `workload.device` setting: `auto` is CUDA when torch sees a GPU, else the CPU.

    Naming `cuda` (or `cuda:N`) on a machine where torch sees no GPU is a WorkloadError,
    not a silent fall back to the CPU.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise WorkloadError(f"workload.device is {name!r} but torch sees no CUDA GPU here; use 'auto' or 'cpu'")
    return device


def new_net(shape: NetShape, seed: int) -> PolicyValueNet:
    """A freshly initialised network, the same for the same seed."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return PolicyValueNet(shape)
    finally:
        torch.random.set_rng_state(generator_state)


def tuned_settings(payload: dict[str, Any]) -> dict[str, float | bool]:
    """The AlphaZero parameters a model file carries for its variant's lineage (empty for a plain model)."""
    tuned = payload.get(TUNED_KEY) or {}
    if not isinstance(tuned, dict) or not all(isinstance(v, int | float | bool) for v in tuned.values()):
        raise WorkloadError(f"model file's {TUNED_KEY!r} entry is not a table of parameter values: {tuned!r}")
    return dict(tuned)
