"""Writer turns on SQLite: the store's write transactions take turns on an OS file lock.

SQLite makes a writer that finds the database locked sleep and retry (1, 2, 5, 10, ...
ms), so under several writing processes most of the time goes to sleeping while the
lock is free. Every write transaction of the store therefore first takes an exclusive
`flock` on a file next to the database: a waiter blocks in the kernel and wakes the
moment the holder lets go. The turn covers BEGIN IMMEDIATE to COMMIT and nothing else.
It only orders zeroloop's writers among themselves; correctness still rests on SQLite's
own locking. PostgreSQL needs none of this (row locks, SKIP LOCKED).

A holder that dies releases the turn with its process. A holder that is *stopped*
(SIGSTOP, a terminal's Ctrl-Z, a frozen container) would hold every writer of the
cluster for as long as it stays stopped, and nothing but its end can free SQLite's own
write lock, which it may hold too. So the turn is bounded by `store.write_turn_max_s`:
while a writer waits, a watcher thread asks the kernel who holds the turn
(/proc/locks); a holder that has held it longer than the bound *and is stopped* loses
it: the waiter kills it (SIGKILL), so its transaction never commits, SQLite rolls it
back, and the cluster writes again (a leader killed this way is replaced by its
standby). A holder that is running is waited for however long its transaction takes,
with a warning, since killing a busy writer would only make it redo its work.
"""

from __future__ import annotations

import logging
import os
import signal
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: fall back to SQLite's busy handler alone
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

# The holder's stamp at the start of the lock file: its pid and when it took the turn
# (CLOCK_MONOTONIC, one clock for every process of the machine), zeros while free.
_STAMP = struct.Struct("<qd")
_FREE = bytes(_STAMP.size)


def _stopped(process: psutil.Process) -> bool:
    return process.status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)


def turn_holder(path: Path) -> int | None:
    """The pid of the process that holds the flock on `path`, as the kernel reports it (None: free or unknown)."""
    try:
        info = os.stat(path)
        with open("/proc/locks") as locks:
            lines = locks.read().splitlines()
    except OSError:
        return None
    where = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    for line in lines:
        fields = line.split()
        # "N: FLOCK ADVISORY WRITE <pid> <maj:min:inode> 0 EOF"; waiters read "N: -> FLOCK ...".
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == where:
            pid = int(fields[4])
            return pid if pid > 0 else None
    return None


class WriterTurns:
    """Serialises this process's write transactions with other processes' on one lock file (None: no turns).

    `max_hold_s` (seconds, None: unbounded) is how long a stopped holder may keep the turn.
    """

    def __init__(self, lock_file: Path | None, max_hold_s: float | None = None) -> None:
        self._path = lock_file if fcntl is not None else None
        self.max_hold_s = max_hold_s
        # flock is per open file, so threads of one process also take turns on this lock.
        self._threads = threading.Lock()
        self._waiting = threading.Event()
        self._watcher: threading.Thread | None = None
        self.broken = 0  # stopped holders this process took the turn from
        self._warned: int | None = None

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Hold the turn for one write transaction (a no-op without a lock file)."""
        if self._path is None:
            yield
            return
        with self._threads:
            # Opened per turn (a few microseconds) so nothing stays open past the store's life.
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    self._wait(fd)
                os.pwrite(fd, _STAMP.pack(os.getpid(), time.monotonic()), 0)
                try:
                    yield
                finally:
                    os.pwrite(fd, _FREE, 0)
            finally:
                os.close(fd)  # releases the lock

    def _wait(self, fd: int) -> None:
        if self.max_hold_s is not None:
            self._ensure_watcher()
            self._waiting.set()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        finally:
            self._waiting.clear()

    def _ensure_watcher(self) -> None:
        if self._watcher is None or not self._watcher.is_alive():
            self._watcher = threading.Thread(target=self._watch, name="zeroloop-write-turn-watch", daemon=True)
            self._watcher.start()

    def _watch(self) -> None:
        """While a writer of this process waits, look for a holder that overstays (runs for the process's life)."""
        assert self.max_hold_s is not None and self._path is not None
        check_s = min(1.0, self.max_hold_s / 4)
        seen: tuple[int, float] | None = None  # (holder pid, when this watcher first saw it hold)
        while True:
            self._waiting.wait()
            time.sleep(check_s)
            if not self._waiting.is_set():
                seen = None
                continue
            holder = turn_holder(self._path)
            if holder is None or holder == os.getpid():
                seen = None
                continue
            if seen is None or seen[0] != holder:
                seen = (holder, time.monotonic())
            self.check_holder(holder, since=self._stamped_since(holder) or seen[1])

    def _stamped_since(self, holder: int) -> float | None:
        assert self._path is not None
        try:
            with open(self._path, "rb") as lock_file:
                raw = lock_file.read(_STAMP.size)
        except OSError:
            return None
        if len(raw) < _STAMP.size:
            return None
        pid, since = _STAMP.unpack(raw)
        return float(since) if pid == holder else None

    def check_holder(self, holder: int, *, since: float) -> bool:
        """Take the turn from `holder` (SIGKILL) if it is stopped and has held it past max_hold_s; True if taken."""
        assert self.max_hold_s is not None
        held_s = time.monotonic() - since
        if held_s <= self.max_hold_s:
            return False
        try:
            process = psutil.Process(holder)
            stopped = _stopped(process)
        except psutil.Error:
            return False  # gone already, or not ours to see
        if not stopped:
            if self._warned != holder:
                self._warned = holder
                log.warning(
                    "process %d has held the store's write turn for %.0f s (store.write_turn_max_s is %g s); "
                    "it is running, so writers wait for it",
                    holder,
                    held_s,
                    self.max_hold_s,
                )
            return False
        try:
            os.kill(holder, signal.SIGKILL)
        except OSError as exc:
            log.error("process %d is stopped holding the store's write turn and cannot be ended: %s", holder, exc)
            return False
        self.broken += 1
        log.error(
            "process %d was stopped holding the store's write turn for %.0f s (store.write_turn_max_s is %g s): "
            "killed it so the cluster can write; its transaction is rolled back",
            holder,
            held_s,
            self.max_hold_s,
        )
        return True
