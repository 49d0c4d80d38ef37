"""Writer turns on SQLite: the store's write transactions take turns on an OS file lock.

SQLite makes a writer that finds the database locked sleep and retry (1, 2, 5, 10, ...
ms), so under several writing processes most of the time goes to sleeping while the
lock is free. Every write transaction of the store therefore first takes an exclusive
`flock` on a file next to the database: a waiter blocks in the kernel and wakes the
moment the holder lets go. The turn covers BEGIN IMMEDIATE to COMMIT and nothing else.
It only orders zeroloop's writers among themselves; correctness still rests on SQLite's
own locking. PostgreSQL needs none of this (row locks, SKIP LOCKED).

A waiter waits as long as the holder's transaction lasts: a holder that dies releases
the lock with its process, but one that hangs inside a transaction holds up the other
writers instead of failing them after `store.busy_timeout_s`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: fall back to SQLite's busy handler alone
    fcntl = None  # type: ignore[assignment]


class WriterTurns:
    """Serialises this process's write transactions with other processes' on one lock file (None: no turns)."""

    def __init__(self, lock_file: Path | None) -> None:
        self._path = lock_file if fcntl is not None else None
        # flock is per open file, so threads of one process also take turns on this lock.
        self._threads = threading.Lock()

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
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the lock
