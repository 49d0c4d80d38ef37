"""Device selection: `auto` picks CUDA when torch sees a GPU, else the CPU; a named GPU that is absent is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zeroloop.cli.doctor import device_problem
from zeroloop.config import WorkloadSettings
from zeroloop.errors import WorkloadError
from zeroloop.workload.games import Game
from zeroloop.workload.network import Evaluator, NetShape, new_net, resolve_device


def test_auto_is_the_cpu_without_a_gpu_and_cuda_with_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1")


def test_named_gpu_without_one_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(WorkloadError, match="torch sees no CUDA GPU here; use 'auto' or 'cpu'"):
        resolve_device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")


def test_auto_is_the_default_and_doctor_accepts_it() -> None:
    assert WorkloadSettings().device == "auto"
    assert device_problem("auto") is None


def test_batched_inference_runs_on_the_resolved_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    game = Game("connect_four_2p")
    net = new_net(NetShape(game.obs_shape, game.num_actions, 1, 8, 8, 2), seed=0)
    evaluator = Evaluator(net, "auto")
    assert evaluator.device == torch.device("cpu")
    assert next(evaluator.net.parameters()).device == evaluator.device
    states = [game.state_after([]), game.state_after([3, 3, 3])]
    obs = np.stack([game.observation(s) for s in states])
    mask = np.stack([game.legal_mask(s) for s in states])
    priors, values = evaluator(obs, mask)
    assert priors.shape == (2, 7) and values.shape == (2, 2)
    np.testing.assert_allclose(priors.sum(axis=1), 1.0, rtol=1e-5)
