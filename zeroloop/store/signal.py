"""SQLite's stand-in for NOTIFY: a file beside the database that grows when events are committed.

PostgreSQL wakes listeners with NOTIFY in the transaction that appends events. SQLite
has no notifications between processes, so a transaction that appended events appends
one byte to `<database>.events` after it commits; a waiting consumer compares the file's
(size, mtime) with what it saw last, one stat() per poll interval, and reads the log only
when it changed, instead of querying the log twenty times a second. Like a NOTIFY, a
ring carries no data and may be lost or spurious: consumers re-read from their cursor,
and still read the log every `events.listen_fallback_s` without a ring.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sqlalchemy.engine import Connection

log = logging.getLogger(__name__)

APPENDED = "zeroloop_events_appended"  # Connection.info key: this transaction appended events
MAX_BYTES = 4096  # the file starts again from empty past this size (bytes)

Stamp = tuple[int, int] | None


def mark_appended(conn: Connection) -> None:
    """Note that the open transaction appended events, so that its commit rings the signal."""
    conn.info[APPENDED] = True


class EventSignal:
    """The signal file of one SQLite database."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def ring(self) -> None:
        """Append one byte (O_APPEND: concurrent rings never overwrite each other); never raises."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                if os.fstat(fd).st_size >= MAX_BYTES:
                    os.ftruncate(fd, 0)
                os.write(fd, b".")
            finally:
                os.close(fd)
        except OSError as exc:  # a read-only directory: consumers still read on their fallback interval
            log.debug("cannot ring the event signal %s: %s", self.path, exc)

    def stamp(self) -> Stamp:
        """What the file looks like now: (size in bytes, mtime in ns), or None when it does not exist."""
        try:
            found = os.stat(self.path)
        except OSError:
            return None
        return (found.st_size, found.st_mtime_ns)
