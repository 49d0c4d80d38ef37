"""What runs inside a worker's child process: the workload, kept loaded between jobs.

The child dies with its parent, and takes its own children (a user's command) with it:
a worker killed with SIGKILL leaves no orphan burning CPU on a job whose lease will be
re-queued anyway. On Linux the kernel sends the child SIGTERM when the worker dies
(PR_SET_PDEATHSIG); its handler kills every descendant and exits. A watcher thread
also checks every `PARENT_CHECK_S` seconds that the parent is still the one that
started it, for systems without PR_SET_PDEATHSIG and for a main thread stuck in C code.
A terminal's Ctrl-C (SIGINT to the whole process group) is the worker's to handle: the
child does not stop for it, so the worker can drain the job in flight.
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

import psutil

from zeroloop.config import WorkloadSettings
from zeroloop.workload.factory import make_workload
from zeroloop.workload.protocol import Evidence, Progress, Workload

_PR_SET_PDEATHSIG = 1
PARENT_CHECK_S = 0.5

# The one workload of this child process, built by `initialize` (the pool's initializer):
# process-local state of a single-purpose process, never shared or imported elsewhere.
_state: dict[str, Any] = {}


def kill_descendants(pid: int) -> None:
    """SIGKILL every process below `pid` (children, grandchildren, ...); those already gone are skipped."""
    try:
        descendants = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return
    for process in descendants:
        try:
            process.kill()
        except psutil.Error:
            continue


def _orphaned(_signum: int | None = None, _frame: FrameType | None = None) -> None:
    kill_descendants(os.getpid())
    # End by SIGTERM itself, so the worker sees from the exit status that the child was told to stop.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
    os._exit(1)  # not reached: the default action of SIGTERM ends the process


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    _orphaned()


def _not_for_us(_signum: int, _frame: FrameType | None) -> None:
    """Let SIGINT pass: the worker decides; a handler, unlike SIG_IGN, is not inherited by commands the child runs."""


def die_with_parent() -> None:
    """Make this process (and its descendants) end when its parent dies; call it first in a pool initializer."""
    parent = os.getppid()
    signal.signal(signal.SIGINT, _not_for_us)
    signal.signal(signal.SIGTERM, _orphaned)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the request took effect
        _orphaned()
    threading.Thread(target=_watch_parent, args=(parent,), name="zeroloop-parent-watch", daemon=True).start()


def initialize(workload_settings_json: str, progress: Any) -> None:
    """Tie this child's life to the worker's, build the workload once, and remember where to send progress."""
    die_with_parent()
    settings = WorkloadSettings.model_validate_json(workload_settings_json)
    if settings.torch_threads == 0:
        settings = settings.model_copy(update={"torch_threads": 1})
    _state["workload"] = make_workload(settings)
    _state["progress"] = progress


def _report(progress: Progress) -> None:
    target = _state.get("progress")
    if target is not None:
        target.put(
            {
                "step": progress.step,
                "loss": progress.loss,
                "policy_loss": progress.policy_loss,
                "value_loss": progress.value_loss,
                "samples_per_s": progress.samples_per_s,
            }
        )


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
