"""The local artifact cache of one node: files named by sha256, bounded in bytes.

Entries are written atomically (temporary name, then rename) and evicted least recently
used first when the cache grows past its limit; a file being written is never evicted.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

from zeroloop.errors import ArtifactError


def check_sha256(sha256: str) -> str:
    """Return `sha256` if it is 64 lowercase hex digits; refuse anything else (no path tricks)."""
    if len(sha256) != 64 or any(char not in "0123456789abcdef" for char in sha256):
        raise ArtifactError(f"{sha256!r} is not a sha256 digest (64 lowercase hex digits)")
    return sha256


class LocalCache:
    """A directory of verified artifact files, at most `max_bytes` in total."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def path(self, sha256: str) -> Path:
        """Where the cached file of `sha256` lives (it may not exist)."""
        check_sha256(sha256)
        return self.root / sha256[:2] / sha256

    def temp_path(self, sha256: str) -> Path:
        """A fresh temporary name beside the final one, for an atomic write."""
        final = self.path(sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        return final.with_name(f".{sha256}.{uuid.uuid4().hex}.part")

    def get(self, sha256: str) -> Path | None:
        """The cached file, touched as recently used, or None."""
        path = self.path(sha256)
        if not path.is_file():
            return None
        os.utime(path)
        return path

    def remove(self, sha256: str) -> None:
        """Drop an entry if present."""
        self.path(sha256).unlink(missing_ok=True)

    def size_bytes(self) -> int:
        """Bytes held by complete entries."""
        return sum(path.stat().st_size for path in self._entries())

    def evict(self, keep: str | None = None) -> list[str]:
        """Remove least recently used entries until within the limit; never `keep`. Return what went."""
        entries = sorted(self._entries(), key=lambda path: path.stat().st_mtime)
        total = sum(path.stat().st_size for path in entries)
        removed = []
        for path in entries:
            if total <= self.max_bytes:
                break
            if path.name == keep:
                continue
            total -= path.stat().st_size
            path.unlink(missing_ok=True)
            removed.append(path.name)
        return removed

    def evict_until(self, enough: Callable[[], bool]) -> int:
        """Remove entries least recently used first until `enough()` holds or none is left; return bytes freed."""
        freed = 0
        for path in sorted(self._entries(), key=lambda path: path.stat().st_mtime):
            if enough():
                break
            freed += path.stat().st_size
            path.unlink(missing_ok=True)
        return freed

    def _entries(self) -> list[Path]:
        if not self.root.exists():
            return []
        return [path for path in self.root.glob("??/*") if path.is_file() and not path.name.startswith(".")]
