"""The workload contract (tests/workload/contract.py) run against the built-in AlphaZero and the command adapter."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.workload.contract import WorkloadContract
from zeroloop.config import WorkloadSettings
from zeroloop.workload.alphazero import AlphaZeroWorkload
from zeroloop.workload.command import CommandWorkload

# A stand-in engine: each operation writes its output, as a user's scripts would; inputs must exist.
ENGINE = """
import json, sys, numpy as np
operation, out, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
for path in rest:
    if path.endswith((".npz", ".pt")):
        open(path, "rb").close()  # a missing input fails the command
if operation == "selfplay":
    np.savez(out, num_games=np.asarray(int(rest[0])), obs=np.zeros((5, 2)))
elif operation == "export":
    np.savez(out, obs=np.zeros((5, 2)))
elif operation == "train":
    open(out, "wb").write(b"weights")
else:
    json.dump({"wins": 2, "draws": 1, "losses": 1}, open(out, "w"))
"""


class TestAlphaZero(WorkloadContract):
    @pytest.fixture
    def workload(self, tiny_settings: WorkloadSettings) -> AlphaZeroWorkload:
        return AlphaZeroWorkload(tiny_settings)

    @pytest.fixture
    def config_key(self) -> str:
        return "tic_tac_toe_2p"


class TestCommand(WorkloadContract):
    @pytest.fixture
    def workload(self, tmp_path: Path) -> CommandWorkload:
        engine = tmp_path / "engine.py"
        engine.write_text(ENGINE)
        run = f"{sys.executable} {engine}"
        commands = tmp_path / "commands.toml"
        commands.write_text(
            f'[selfplay]\ncommand = "{run} selfplay {{output}} {{games}}"\n'
            f'[export]\ncommand = "{run} export {{output}} {{inputs}}"\n'
            f'[train]\ncommand = "{run} train {{output}} {{window}}"\n'
            f'[evaluate]\ncommand = "{run} evaluate {{output}} {{candidate}}"\n'
        )
        return CommandWorkload(commands, default_timeout_s=60)

    @pytest.fixture
    def config_key(self) -> str:
        return "ringrift_2p"
