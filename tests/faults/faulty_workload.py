"""A workload of the tests' own whose selfplay fails the way a plan file says, in the worker's child process.

`workload.kind = "tests.faults.faulty_workload:FaultyWorkload"`, and `workload.command_file`
names the plan: a file holding one word that says what a selfplay job of one game does
(a job of more games always succeeds, so a test can interleave failing and working jobs):

    ok           write a small game batch (the job succeeds)
    torch_full   torch.save to /dev/full, which refuses every write as a full disk does (RuntimeError)
    oserror28    raise OSError(28): a full disk reported with no path, as some libraries do
    value        raise a ValueError from inside the workload (a library's bug)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zeroloop.config import WorkloadSettings
from zeroloop.workload.protocol import (
    EvaluateRequest,
    Evidence,
    ExportRequest,
    FileKind,
    OutputFile,
    ProgressCallback,
    SelfplayRequest,
    TrainRequest,
    no_progress,
)


class FaultyWorkload:
    """Selfplay as the plan says; the other operations are not used by these tests."""

    def __init__(self, plan: Path) -> None:
        self.plan = plan

    @classmethod
    def from_settings(cls, settings: WorkloadSettings) -> FaultyWorkload:
        """Read the plan's path from `workload.command_file`."""
        assert settings.command_file is not None
        return cls(settings.command_file)

    def selfplay(self, request: SelfplayRequest) -> Evidence:
        """Fail as planned (a job of one game), or write a batch of `games` games."""
        fault = self.plan.read_text().strip() if request.games == 1 else "ok"
        if fault == "torch_full":
            import torch

            torch.save({"weights": torch.zeros(4096)}, "/dev/full")
        elif fault == "oserror28":
            raise OSError(28)
        elif fault == "value":
            raise ValueError("a library's own mistake")
        np.savez(request.output, num_games=np.asarray(request.games), obs=np.zeros((request.games * 5, 3)))
        output = OutputFile.describe(request.output, FileKind.GAME_BATCH)
        return Evidence(
            "selfplay", request.config_key, (output,), {"games": request.games, "positions": request.games * 5}
        )

    def export(self, request: ExportRequest) -> Evidence:
        """Not used."""
        raise NotImplementedError

    def train(self, request: TrainRequest, progress: ProgressCallback = no_progress) -> Evidence:
        """Not used."""
        raise NotImplementedError

    def evaluate(self, request: EvaluateRequest) -> Evidence:
        """Not used."""
        raise NotImplementedError
