"""What runs inside a worker's child process: the workload, kept loaded between jobs.

The child dies with its parent (PR_SET_PDEATHSIG on Linux), so a worker killed with
SIGKILL leaves no orphan burning CPU on a job whose lease will be re-queued anyway.
"""

from __future__ import annotations

import ctypes
import queue
import signal
import sys
from typing import Any

from zeroloop.config import WorkloadSettings
from zeroloop.workload.factory import make_workload
from zeroloop.workload.protocol import Evidence, Progress, Workload

_PR_SET_PDEATHSIG = 1

# The one workload of this child process, built by `initialize` (the pool's initializer):
# process-local state of a single-purpose process, never shared or imported elsewhere.
_state: dict[str, Any] = {}


def initialize(workload_settings_json: str, progress: Any) -> None:
    """Build the workload once per child and remember where to send training progress."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    settings = WorkloadSettings.model_validate_json(workload_settings_json)
    if settings.torch_threads == 0:
        settings = settings.model_copy(update={"torch_threads": 1})
    _state["workload"] = make_workload(settings)
    _state["progress"] = progress


def _report(progress: Progress) -> None:
    target = _state.get("progress")
    if target is not None:
        target.put({"step": progress.step, "loss": progress.loss, "samples_per_s": progress.samples_per_s})


def run_operation(operation: str, request: Any) -> Evidence:
    """Run one workload operation on a request and return its evidence."""
    workload: Workload = _state["workload"]
    if operation == "selfplay":
        return workload.selfplay(request)
    if operation == "export":
        return workload.export(request)
    if operation == "train":
        return workload.train(request, _report)
    if operation == "evaluate":
        return workload.evaluate(request)
    raise ValueError(f"unknown workload operation {operation!r}")


def next_progress(progress: Any, timeout_s: float) -> dict[str, float] | None:
    """The next training progress report from the child, or None after `timeout_s` seconds."""
    try:
        report: dict[str, float] = progress.get(timeout=timeout_s)
    except queue.Empty:
        return None
    return report
