"""Choosing the workload a worker runs from the settings."""

from __future__ import annotations

import importlib.util

from zeroloop.config import WorkloadSettings
from zeroloop.errors import WorkloadError
from zeroloop.workload.protocol import Workload

# What the built-in AlphaZero needs beyond the core install: module -> package.
ALPHAZERO_MODULES = {"torch": "torch", "pyspiel": "open-spiel"}
ALPHAZERO_INSTALL = "pip install torch==2.13.0 && pip install 'zeroloop[alphazero]'"


def installed(module: str) -> bool:
    """Whether `module` can be imported here, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require_alphazero() -> None:
    """Refuse, in one line naming the install command, when torch or OpenSpiel is missing (WorkloadError)."""
    missing = [package for module, package in ALPHAZERO_MODULES.items() if not installed(module)]
    if missing:
        raise WorkloadError(
            f"the built-in AlphaZero workload needs torch and OpenSpiel, and this install lacks "
            f"{' and '.join(missing)}: {ALPHAZERO_INSTALL} (or set workload.kind = 'command' to run your own engine)"
        )


def make_workload(settings: WorkloadSettings) -> Workload:
    """The workload `settings.kind` names: built-in AlphaZero, or the user's commands from `command_file`."""
    if settings.kind == "command":
        if settings.command_file is None:
            raise WorkloadError("workload.kind is 'command' but workload.command_file is not set")
        from zeroloop.workload.command import CommandWorkload

        return CommandWorkload(settings.command_file, settings.command_timeout_s)
    require_alphazero()
    # Imported here so a command-only worker never pays for loading torch, nor needs it installed.
    from zeroloop.workload.alphazero import AlphaZeroWorkload

    return AlphaZeroWorkload(settings)
