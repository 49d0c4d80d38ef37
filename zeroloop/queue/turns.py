"""Writer turns on SQLite: queue writers of one database take turns on an OS file lock.

SQLite makes a writer that finds the database locked sleep and retry (1, 2, 5, 10, ...
ms), so under several claiming processes most of the time goes to sleeping while the
lock is free. Queue writers therefore first take an exclusive `flock` on a file next
to the database: a waiter blocks in the kernel and wakes the moment the holder lets
go. The lock only orders queue writers among themselves; correctness still rests on
SQLite's own `BEGIN IMMEDIATE`. PostgreSQL needs none of this (row locks, SKIP LOCKED).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from zeroloop.store.database import Store, sqlite_path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: fall back to SQLite's busy handler alone
    fcntl = None  # type: ignore[assignment]


class WriterTurns:
    """Serialises this process's queue write transactions with other processes' on one SQLite file."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._path: Path | None = None
        if store.backend == "sqlite" and fcntl is not None:
            self._path = sqlite_path(store.url).with_name(sqlite_path(store.url).name + ".queue-lock")
        # flock is per open file, so threads of one process also take turns on this lock.
        self._threads = threading.Lock()

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Hold the turn for one write transaction; a no-op on PostgreSQL or inside an open transaction."""
        # Inside an open transaction this process already holds SQLite's write lock: waiting
        # for the file lock now could deadlock against a holder waiting for that write lock.
        if self._path is None or self.store.in_transaction:
            yield
            return
        with self._threads:
            # Opened per turn (a few microseconds) so nothing stays open past the App's life.
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the lock
