"""Moving bytes: URL validation, priorities, a shared bandwidth limit, chunked copies.

All artifact traffic of one process goes through one `TransferGate`: a token bucket
(bytes/second, 0 for unlimited) that hands out chunks to the waiting transfer of the
highest priority first, so a model a worker waits for overtakes bulk game data.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import threading
import time
from collections.abc import Callable, Mapping
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import IO, Any

import fsspec
from fsspec.registry import known_implementations

from zeroloop.config import redact
from zeroloop.errors import ArtifactError

CHUNK_BYTES = 1024 * 1024

# Backends that can hold artifacts: writable, addressable stores. Read-only or archive
# protocols (http, zip, github, ...) are refused rather than failing at the first write.
WRITABLE_PROTOCOLS = frozenset(
    {"file", "local", "memory", "s3", "s3a", "gs", "gcs", "az", "abfs", "adl", "sftp", "ssh", "hdfs", "webhdfs"}
    | {"oss", "smb", "ftp", "webdav"}
)


class ArtifactKind(StrEnum):
    """What an artifact is; decides its folder and its transfer priority."""

    GAME_BATCH = "game_batch"
    TRAINING_WINDOW = "training_window"
    MODEL = "model"
    MATCH_RESULT = "match_result"


class Priority(IntEnum):
    """Transfer priority: higher goes first."""

    BULK = 0
    NORMAL = 1
    HIGH = 2
    CRITICAL = 3


PRIORITY_OF_KIND = {
    ArtifactKind.MODEL: Priority.CRITICAL,
    ArtifactKind.MATCH_RESULT: Priority.HIGH,
    ArtifactKind.TRAINING_WINDOW: Priority.NORMAL,
    ArtifactKind.GAME_BATCH: Priority.BULK,
}


def scheme_of(url: str) -> str:
    """The URL scheme (protocol) of a location; a bare path is a local file."""
    return url.split("://", 1)[0] if "://" in url else "file"


def open_location(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """Return (filesystem, root path) for an artifact URL; refuse unknown or unsuitable schemes.

    `storage_options` go to the fsspec backend (for s3://: endpoint_url, key, secret,
    default_block_size, ...).
    """
    scheme = scheme_of(url)
    if scheme not in WRITABLE_PROTOCOLS:
        known = "known to fsspec but not a writable store" if scheme in known_implementations else "unknown"
        raise ArtifactError(
            f"artifact location {redact(url)!r}: scheme {scheme!r} is {known}; use one of "
            f"{', '.join(sorted(WRITABLE_PROTOCOLS))}"
        )
    try:
        fs, root = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    except ImportError as exc:
        raise ArtifactError(f"artifact location {redact(url)!r} needs a package: {exc}{_extra_hint(scheme)}") from None
    except TypeError as exc:  # an option the backend does not take
        raise ArtifactError(
            f"artifact location {redact(url)!r}: artifacts.storage_options do not suit the {scheme} backend ({exc})"
        ) from None
    return fs, str(root).rstrip("/")


def _extra_hint(scheme: str) -> str:
    return "; install it with pip install 'zeroloop[s3]'" if scheme in ("s3", "s3a") else ""


class TransferGate:
    """A bandwidth limit shared by all transfers of a process, served by priority."""

    def __init__(self, bytes_per_s: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.bytes_per_s = bytes_per_s
        self._clock = clock
        self._cond = threading.Condition()
        self._waiting: list[tuple[int, int]] = []  # (-priority, ticket): a min-heap serves the highest first
        self._tickets = itertools.count()
        self._available = float(bytes_per_s)
        self._refilled = clock()

    def acquire(self, nbytes: int, priority: Priority) -> None:
        """Block until `nbytes` may be sent; higher priorities are served first."""
        if self.bytes_per_s <= 0:
            return
        with self._cond:
            entry = (-int(priority), next(self._tickets))
            heapq.heappush(self._waiting, entry)
            try:
                while True:
                    self._refill()
                    if self._waiting[0] == entry and self._available >= min(nbytes, self.bytes_per_s):
                        self._available -= nbytes
                        return
                    shortfall = max(0.0, min(nbytes, self.bytes_per_s) - self._available)
                    self._cond.wait(timeout=max(0.001, shortfall / self.bytes_per_s))
            finally:
                self._waiting.remove(entry)
                heapq.heapify(self._waiting)
                self._cond.notify_all()

    def _refill(self) -> None:
        now = self._clock()
        self._available = min(float(self.bytes_per_s), self._available + (now - self._refilled) * self.bytes_per_s)
        self._refilled = now


def copy_stream(source: IO[bytes], target: IO[bytes], gate: TransferGate, priority: Priority) -> tuple[str, int]:
    """Copy in chunks through the gate; return the sha256 (hex) and size (bytes) of what was copied."""
    digest = hashlib.sha256()
    size = 0
    while chunk := source.read(CHUNK_BYTES):
        gate.acquire(len(chunk), priority)
        target.write(chunk)
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def hash_file(path: Path) -> tuple[str, int]:
    """The sha256 (hex) and size (bytes) of a local file; ArtifactError when it cannot be read."""
    try:
        with path.open("rb") as handle:
            return hash_stream(handle)
    except OSError as exc:
        raise ArtifactError(f"cannot read {path}: {exc.strerror}") from None


def hash_stream(source: IO[bytes]) -> tuple[str, int]:
    """The sha256 (hex) and size (bytes) of a stream, read to its end."""
    digest = hashlib.sha256()
    size = 0
    while chunk := source.read(CHUNK_BYTES):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size
