"""Choosing the workload a worker runs from the settings."""

from __future__ import annotations

from zeroloop.config import WorkloadSettings
from zeroloop.errors import WorkloadError
from zeroloop.workload.protocol import Workload


def make_workload(settings: WorkloadSettings) -> Workload:
    """The workload `settings.kind` names: built-in AlphaZero, or the user's commands from `command_file`."""
    if settings.kind == "command":
        if settings.command_file is None:
            raise WorkloadError("workload.kind is 'command' but workload.command_file is not set")
        from zeroloop.workload.command import CommandWorkload

        return CommandWorkload(settings.command_file, settings.command_timeout_s)
    # Imported here so a command-only worker never pays for loading torch.
    from zeroloop.workload.alphazero import AlphaZeroWorkload

    return AlphaZeroWorkload(settings)
