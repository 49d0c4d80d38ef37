"""Why a job failed, in one line that names the node and the path: for any exception of any library.

A job fails for reasons the executor cannot list in advance: an OSError from the disk,
a RuntimeError from `torch.save` on a full disk, an S3 client's error when the endpoint
cuts an upload, a workload's own error. `describe` turns each into one line the job
records, so whoever reads it knows where to look:

    node w1: No space left on device at /data/work/w1/job-3-1 (the disk is full: ...)
    node w1: RuntimeError: PytorchStreamWriter failed writing file ... (while running, at /data/work/...)

A full disk is recognised by its errno anywhere in the exception's chain, by the words
libraries use for it, or by the disk holding the path being full now.
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from zeroloop.errors import ZeroloopError

FULL_DISK_HINT = "the disk is full: free space on this node, the job is retried"
# What libraries say when a write failed for want of space, when they do not keep the errno.
_FULL_WORDS = ("no space left", "disk full", "disk is full", "file write failed", "enospc", "quota exceeded")
MAX_MESSAGE_CHARS = 500  # of one exception's text in a reason (characters)


@dataclass(frozen=True)
class Phase:
    """What a job was doing (`doing`, e.g. "storing the output") and the path it worked on."""

    doing: str
    path: Path | str


def describe(exc: BaseException, *, node: str, phase: Phase, full_pct: float = 100.0) -> str:
    """One line: the node, what went wrong, and the path; a full disk says so (`full_pct`: use that counts as full)."""
    full = _full_disk(exc) or _disk_use_pct(phase.path) >= full_pct
    hint = f" ({FULL_DISK_HINT})" if full else ""
    if isinstance(exc, OSError) and not isinstance(exc, ZeroloopError):
        where = exc.filename or phase.path  # a write error names no file: say which disk
        return f"node {node}: {_os_message(exc)} at {where}{hint}"
    if isinstance(exc, ZeroloopError):  # zeroloop's own messages are written to be read whole
        message = str(exc).strip() or type(exc).__name__
    else:
        message = f"{type(exc).__name__}: {_first_line(str(exc)) or '(no message)'}"
    return f"node {node}: {message} (while {phase.doing}, at {phase.path}){hint}"


def _os_message(exc: OSError) -> str:
    number = exc.errno if exc.errno is not None else _errno_arg(exc)
    if exc.strerror:
        return exc.strerror
    if number is not None:
        return os.strerror(number)
    return _first_line(str(exc)) or type(exc).__name__


def _errno_arg(exc: BaseException) -> int | None:
    """The errno of `OSError(28)`, which Python keeps in args[0] only."""
    if isinstance(exc, OSError) and len(exc.args) == 1 and isinstance(exc.args[0], int):
        return int(exc.args[0])
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 20:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _full_disk(exc: BaseException) -> bool:
    for link in _chain(exc):
        number = getattr(link, "errno", None)
        if number is None:
            number = _errno_arg(link)
        if number in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(words in str(link).lower() for words in _FULL_WORDS):
            return True
    return False


def _disk_use_pct(path: Path | str) -> float:
    """Use (%) of the local disk holding `path` or its nearest existing parent; 0 for a URL or an unreadable disk."""
    if "://" in str(path):
        return 0.0
    where = Path(path)
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        usage = shutil.disk_usage(where)
    except OSError:
        return 0.0
    return 100.0 * usage.used / usage.total if usage.total else 0.0


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0][:MAX_MESSAGE_CHARS] if lines else ""
