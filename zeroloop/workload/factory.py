"""Choosing the workload a worker runs from the settings: built in, or a class of the user's own.

`workload.kind` is `alphazero`, `command`, a `package.module:ClassName`, or the name of an
entry point in the group `zeroloop.workloads` (zeroloop.plugins). A workload class of
one's own has the four operations of `zeroloop.workload.protocol.Workload` and a
classmethod `from_settings(settings: WorkloadSettings)` that builds it; docs/workload.md
shows how to write one and run the workload contract tests against it.
"""

from __future__ import annotations

import importlib.util
from typing import cast

from zeroloop import plugins
from zeroloop.config import WorkloadSettings
from zeroloop.errors import WorkloadError
from zeroloop.workload.protocol import REQUIRED_OPERATIONS, Workload

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


# The built-in kinds. Their constructors differ, so make_workload builds them itself.
BUILT_IN = {
    "alphazero": "zeroloop.workload.alphazero:AlphaZeroWorkload",
    "command": "zeroloop.workload.command:CommandWorkload",
}


def workload_class(kind: str) -> type:
    """The class of a workload kind of one's own; ConfigError (one line) when it does not load or fit."""
    found: type = plugins.resolve(
        kind,
        what="workload",
        setting="workload.kind",
        group=plugins.WORKLOAD_GROUP,
        built_in={},
        check=plugins.has_methods(*REQUIRED_OPERATIONS, "from_settings"),
    )
    return found


def check_workload(settings: WorkloadSettings) -> None:
    """Refuse, at start, a workload this machine cannot run: missing torch/OpenSpiel, or a class that does not load."""
    if settings.kind == "alphazero":
        require_alphazero()
    elif settings.kind not in BUILT_IN:
        workload_class(settings.kind)


def make_workload(settings: WorkloadSettings) -> Workload:
    """The workload `settings.kind` names: built-in AlphaZero, the user's commands, or the user's own class."""
    if settings.kind not in BUILT_IN:
        return cast(Workload, workload_class(settings.kind).from_settings(settings))  # type: ignore[attr-defined]
    if settings.kind == "command":
        if settings.command_file is None:
            raise WorkloadError("workload.kind is 'command' but workload.command_file is not set")
        from zeroloop.workload.command import CommandWorkload

        return CommandWorkload(settings.command_file, settings.command_timeout_s)
    require_alphazero()
    # Imported here so a command-only worker never pays for loading torch, nor needs it installed.
    from zeroloop.workload.alphazero import AlphaZeroWorkload

    return AlphaZeroWorkload(settings)
