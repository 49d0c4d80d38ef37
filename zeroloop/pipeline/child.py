"""A worker's job child: one process of zeroloop's own that runs workload operations, kept loaded between jobs.

The worker starts it as `python -m zeroloop.pipeline.child PARENT_PID FD` (a module entry
of zeroloop's own, never multiprocessing's spawn, which re-imports the caller's main
module: a script without a `__main__` guard would start a second coordinator in every
child). Requests and answers travel over one socket pair as pickled messages:

    worker -> child   ("init", workload settings JSON)   ("run", operation, request)
    child -> worker   ("progress", report)   ("pulse",)   ("done", evidence)   ("error", exception, traceback)

The child never outlives the worker, and takes its own children (a user's command) with
it. The worker's pid comes on the command line, so the child checks it has not already
been orphaned right after asking the kernel (PR_SET_PDEATHSIG, Linux) to send it SIGTERM
when the worker dies; a watcher thread also checks the parent every `PARENT_CHECK_S`
seconds, for systems without PR_SET_PDEATHSIG and for a main thread stuck in C code. On
SIGTERM it kills every descendant and ends by that signal. A terminal's Ctrl-C (SIGINT
to the whole process group) is the worker's to handle: the child does not stop for it.

While an operation runs, the watcher also sends a pulse whenever the work moved since its
last look: the main thread's Python stack changed, or the commands the child started used
CPU. Progress reports count too. A child that sends neither for `queue.stall_after_s` is
stalled (a hung CUDA call, a deadlocked command): the worker kills it and fails the job.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any

import psutil

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
PARENT_CHECK_S = 0.5
PULSE_S = 1.0  # how often the watcher looks whether the work moved (seconds)
EXIT_WAIT_S = 5.0  # longest wait for a killed child's exit status (seconds)


class ChildDied(BrokenProcessPool):
    """The job child ended before answering (killed, crashed, or told to stop by a signal).

    A BrokenProcessPool, as the executor has always been told of a dead child."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised in the job child, kept as its cause."""


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


# --- the worker's side ----------------------------------------------------------------------


class JobChild:
    """The worker's handle on its job child: started once, fed one operation at a time (blocking; run in a thread).

    Start it from a thread that lives as long as the worker (its event loop's): on Linux the
    kernel's parent-death signal follows the thread that started the child.
    """

    def __init__(self, workload_settings_json: str) -> None:
        ours, theirs = socket.socketpair()
        # The child imports zeroloop as this process does, whatever put it on sys.path.
        paths = [entry for entry in sys.path if entry]
        inherited = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, *([inherited] if inherited else [])])}
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "zeroloop.pipeline.child", str(os.getpid()), str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
            )
        finally:
            theirs.close()
        self.conn = Connection(ours.detach())
        self.dead = False  # it ended under an operation: start another for the next one
        self._lock = threading.Lock()
        self.last_activity = time.monotonic()  # the last pulse or progress report (time.monotonic())
        self.conn.send(("init", workload_settings_json))

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    def run(self, operation: str, request: Any, progress: Callable[[dict[str, float]], None] | None = None) -> Any:
        """Run one operation and return its evidence; its exception is raised here. ChildDied if the child ends."""
        with self._lock:
            self.last_activity = time.monotonic()
            self._send(("run", operation, request))
            while True:
                try:
                    message = self.conn.recv()
                except (EOFError, OSError):
                    self.dead = True
                    raise ChildDied(f"the job child (pid {self.pid}) ended without an answer") from None
                kind = message[0]
                if kind == "pulse":
                    self.last_activity = time.monotonic()
                elif kind == "progress":
                    self.last_activity = time.monotonic()
                    if progress is not None:
                        progress(message[1])
                elif kind == "done":
                    return message[1]
                else:
                    _kind, error, text = message
                    raise error from RemoteTraceback(text)

    def _send(self, message: tuple[Any, ...]) -> None:
        try:
            self.conn.send(message)
        except (OSError, EOFError):
            self.dead = True
            raise ChildDied(f"the job child (pid {self.pid}) is gone") from None

    def stalled_s(self) -> float:
        """Seconds since the child last showed that its work moved."""
        return time.monotonic() - self.last_activity

    def told_to_stop(self) -> bool:
        """Whether the child ended by SIGTERM or SIGINT sent to it (a node being stopped), rather than failing."""
        try:
            code = self.process.wait(EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            return False
        return code in (-signal.SIGTERM, -signal.SIGINT)

    def kill(self) -> None:
        """Kill the child and everything it started; wait (bounded) for it to be gone."""
        kill_descendants(self.process.pid)  # a user's command the child started must not outlive it
        self.process.kill()
        try:
            self.process.wait(EXIT_WAIT_S)
        except subprocess.TimeoutExpired:  # stuck in uninterruptible I/O: it ends when that returns
            log.warning("job child %d not gone %g s after SIGKILL", self.process.pid, EXIT_WAIT_S)
        self.conn.close()


# --- the child's side -----------------------------------------------------------------------


def _orphaned(_signum: int | None = None, _frame: FrameType | None = None) -> None:
    kill_descendants(os.getpid())
    # End by SIGTERM itself, so the worker sees from the exit status that the child was told to stop.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
    os._exit(1)  # not reached: the default action of SIGTERM ends the process


def _not_for_us(_signum: int, _frame: FrameType | None) -> None:
    """Let SIGINT pass: the worker decides; a handler, unlike SIG_IGN, is not inherited by commands the child runs."""


def die_with_parent(parent: int) -> None:
    """End this process (and its descendants) when `parent` dies, including when it already has."""
    signal.signal(signal.SIGINT, _not_for_us)
    signal.signal(signal.SIGTERM, _orphaned)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the request took effect (or before this process ran)
        _orphaned()


class _Watcher:
    """The child's watcher thread: ends the child when its parent is gone, and pulses while the work moves."""

    def __init__(self, parent: int, send: Callable[[tuple[Any, ...]], None]) -> None:
        self.parent = parent
        self.send = send
        self.running = threading.Event()  # set while an operation runs
        self.main = threading.main_thread().ident
        self._stack: tuple[tuple[int, int], ...] = ()
        self._cpu = 0.0
        self._looked_at = 0.0

    def start(self) -> None:
        threading.Thread(target=self._watch, name="zeroloop-child-watch", daemon=True).start()

    def _watch(self) -> None:
        while os.getppid() == self.parent:
            time.sleep(PARENT_CHECK_S)  # the watcher's own period; nothing here waits for an event
            if self.running.is_set() and time.monotonic() - self._looked_at >= PULSE_S:
                self._looked_at = time.monotonic()
                if self._moved():
                    self.send(("pulse",))
        _orphaned()

    def _moved(self) -> bool:
        """Whether the main thread's Python stack changed, or the child's commands used CPU, since the last look."""
        frame = sys._current_frames().get(self.main or 0)
        stack = []
        while frame is not None:
            stack.append((id(frame), frame.f_lasti))
            frame = frame.f_back
        cpu = 0.0
        try:
            for process in psutil.Process().children(recursive=True):
                times = process.cpu_times()
                cpu += times.user + times.system
        except psutil.Error:
            pass  # a command that ended between the listing and the reading: the next look counts it
        moved = tuple(stack) != self._stack or cpu > self._cpu
        self._stack, self._cpu = tuple(stack), cpu
        return moved


def _serve(conn: Connection, parent: int) -> None:
    """Build the workload once, then run the operations the worker sends until it closes the connection."""
    lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with lock:
            conn.send(message)

    watcher = _Watcher(parent, send)
    watcher.start()
    from zeroloop.config import WorkloadSettings
    from zeroloop.workload.factory import make_workload

    kind, settings_json = conn.recv()
    assert kind == "init"
    settings = WorkloadSettings.model_validate_json(settings_json)
    if settings.torch_threads == 0:
        settings = settings.model_copy(update={"torch_threads": 1})
    workload = make_workload(settings)

    def report(progress: Any) -> None:
        send(("progress", {"step": progress.step, "loss": progress.loss, "samples_per_s": progress.samples_per_s}))

    while True:
        try:
            _kind, operation, request = conn.recv()
        except EOFError:
            return  # the worker closed it: done
        watcher.running.set()
        try:
            evidence = run_operation(workload, operation, request, report)
        except BaseException as exc:  # noqa: BLE001 - every failure of the operation is the worker's to report
            send(("error", _picklable(exc), traceback.format_exc()))
        else:
            send(("done", evidence))
        finally:
            watcher.running.clear()


def _picklable(exc: BaseException) -> BaseException:
    """`exc`, or a WorkloadError saying what it was when it cannot cross the pipe."""
    import pickle

    from zeroloop.errors import WorkloadError

    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - any pickling failure: send what it said instead
        return WorkloadError(f"{type(exc).__name__}: {exc}")
    return exc


def run_operation(workload: Any, operation: str, request: Any, report: Callable[[Any], None]) -> Any:
    """Run one workload operation on a request and return its evidence."""
    if operation == "selfplay":
        return workload.selfplay(request)
    if operation == "export":
        return workload.export(request)
    if operation == "train":
        return workload.train(request, report)
    if operation == "evaluate":
        return workload.evaluate(request)
    if operation == "distill":
        distill = getattr(workload, "distill", None)  # optional: a workload of one's own may have none
        if distill is None:
            from zeroloop.errors import WorkloadError

            raise WorkloadError(f"workload {type(workload).__name__} cannot distill: it has no distill operation")
        return distill(request, report)
    raise ValueError(f"unknown workload operation {operation!r}")


def main(argv: list[str]) -> None:
    """The child's entry: `python -m zeroloop.pipeline.child PARENT_PID FD`."""
    parent, fd = int(argv[0]), int(argv[1])
    die_with_parent(parent)
    _serve(Connection(fd), parent)


if __name__ == "__main__":
    main(sys.argv[1:])
