"""Content-addressed artifacts over fsspec, with a manifest in the store.

An artifact is named by the sha256 of its bytes and lives at
`<location>/<kind>/<sha[:2]>/<sha>`. The manifest records a shared copy by its key
relative to the location (`<kind>/<sha[:2]>/<sha>`), resolved against the configured
location on every read, so a moved or restored data directory (or a bucket copied
elsewhere) is self-contained; only a copy held on one node is an absolute URL.

`put` hashes a local file, uploads it under a temporary name and renames it into
place, then records the artifact and its copy in the manifest; it returns only after
that, which is what lets a job report its output only once the output is safe. `fetch`
returns a local path in the node's cache and verifies the bytes on every read; a copy
that does not match its name is quarantined
(ARTIFACT_CORRUPT) and the next copy is tried.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zeroloop.artifacts.cache import LocalCache, check_sha256
from zeroloop.artifacts.transfer import (
    PRIORITY_OF_KIND,
    ArtifactKind,
    TransferGate,
    copy_stream,
    hash_file,
    hash_stream,
    open_location,
    scheme_of,
)
from zeroloop.config import redact
from zeroloop.errors import ArtifactError, EvacuationError
from zeroloop.events.bus import EventBus
from zeroloop.events.wiring import declare
from zeroloop.store.database import Store
from zeroloop.store.queries import artifacts as queries

# Object stores whose fsspec backend signs a URL for reading without credentials (`fs.sign`).
_SIGNING_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs"})

log = logging.getLogger(__name__)

declare("zeroloop.artifacts", emits=("ARTIFACT_CORRUPT",))


def shared_key(kind: ArtifactKind, sha256: str) -> str:
    """The manifest's name of an artifact's shared copy: its path relative to the artifact location."""
    return f"{_kind(kind).value}/{sha256[:2]}/{check_sha256(sha256)}"


def _kind(kind: ArtifactKind | str) -> ArtifactKind:
    """The kind named; ArtifactError listing the kinds there are for any other name."""
    try:
        return ArtifactKind(kind)
    except ValueError:
        known = ", ".join(member.value for member in ArtifactKind)
        raise ArtifactError(f"{kind!r} is not an artifact kind; the kinds are {known}") from None


def _what(exc: BaseException) -> str:
    """An exception in a few words: an OSError's text for its errno, else its message, else its type."""
    if isinstance(exc, OSError):
        number = exc.errno if exc.errno is not None else (exc.args[0] if len(exc.args) == 1 else None)
        text = exc.strerror or (os.strerror(number) if isinstance(number, int) else "")  # OSError(28): errno in args
        if text:
            return f"{text}: {exc.filename}" if exc.filename else text
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


@dataclass(frozen=True)
class Artifact:
    """A stored artifact: its content hash, kind and size (bytes)."""

    sha256: str
    kind: ArtifactKind
    size_bytes: int
    config_key: str | None = None


class Artifacts:
    """The artifact store of one process: one shared location, one local cache, one gate."""

    def __init__(
        self,
        store: Store,
        bus: EventBus,
        *,
        url: str,
        cache_dir: Path,
        cache_max_bytes: int,
        bandwidth_bytes_per_s: int = 0,
        node: str,
        clock: Callable[[], float] = time.time,
        held_dir: Path | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})  # for the backend of `url` (endpoint, keys, ...)
        self.fs, self.root = open_location(url, self.storage_options)
        self.cache = LocalCache(cache_dir, cache_max_bytes)
        self.gate = TransferGate(bandwidth_bytes_per_s)
        self.node = node
        self.held_dir = held_dir  # where artifacts that could not be uploaded wait; None: failing uploads raise
        self.clock = clock

    def location(self, kind: ArtifactKind, sha256: str) -> str:
        """The URL of the shared copy of an artifact."""
        return self.resolve(shared_key(kind, sha256))

    def resolve(self, location: str) -> str:
        """The URL a manifest location names: a relative key under this location, or an absolute URL as it is."""
        return location if "://" in location else f"{self.url}/{location}"

    def open_copy(self, location: str) -> tuple[Any, str]:
        """The filesystem and path of a copy, named as the manifest names it (a relative key or a URL);
        the location's options apply to copies on its backend only."""
        resolved = self.resolve(location)
        same = scheme_of(resolved) == scheme_of(self.url)
        return open_location(resolved, self.storage_options if same else None)

    def _path(self, kind: ArtifactKind, sha256: str) -> str:
        return f"{self.root}/{kind.value}/{sha256[:2]}/{sha256}"

    def put(
        self,
        source: Path,
        kind: ArtifactKind,
        *,
        config_key: str | None = None,
        meta: dict[str, Any] | None = None,
        producer_job_id: int | None = None,
    ) -> Artifact:
        """Upload a local file (verified, atomic) and record it; idempotent for identical content.

        An upload that fails for any reason of the backend (a full disk, an endpoint that cuts
        the transfer) keeps the only copy on this node, recorded as held, when this process
        holds (`held_dir`); ArtifactError naming both places when that fails too, or when
        it does not hold.
        """
        kind = _kind(kind)
        sha256, size = hash_file(source)
        target = self._path(kind, sha256)
        location, node = shared_key(kind, sha256), None
        try:
            if not self._present(target, size):
                self._upload(source, target, sha256, kind)
        except ArtifactError:
            raise  # the source changed while it was uploaded: holding it would keep the wrong bytes
        except Exception as exc:
            refused = f"the artifact location {redact(self.url)} refused it ({_what(exc)})"
            if self.held_dir is None:
                raise ArtifactError(f"artifact {sha256[:12]} from {source} not stored: {refused}") from exc
            # The shared location is unreachable: keep the only copy on this node, recorded as
            # such, so the node is not terminated before `evacuate` has uploaded it.
            try:
                location, node = self._hold(source, sha256), self.node
            except OSError as held_exc:
                raise ArtifactError(
                    f"artifact {sha256[:12]} from {source} not stored: {refused}, and holding it on node "
                    f"{self.node} at {self.held_dir} failed too ({held_exc.strerror or _what(held_exc)})"
                ) from exc
            log.warning("artifact %s held on node %s: upload failed (%s)", sha256[:12], self.node, _what(exc))
        self._remember_locally(source, sha256)
        now = self.clock()
        with self.store.transaction() as conn:
            queries.record_artifact(
                conn,
                {
                    "sha256": sha256,
                    "kind": kind.value,
                    "size_bytes": size,
                    "config_key": config_key,
                    "producer_job_id": producer_job_id,
                    "meta": meta or {},
                    "created_at": now,
                },
            )
            queries.record_copy(conn, sha256=sha256, location=location, node=node, now=now)
        return Artifact(sha256, kind, size, config_key)

    def upload_shared(self, source: Path, kind: ArtifactKind) -> tuple[str, int]:
        """Upload a local file to the shared location (verified, atomic) without recording it; its sha256 and size.

        For a caller that records the artifact in a transaction of its own (see
        zeroloop.ops.consolidate), under the key `shared_key(kind, sha256)`.
        """
        kind = _kind(kind)
        sha256, size = hash_file(source)
        target = self._path(kind, sha256)
        if not self._present(target, size):
            self._upload(source, target, sha256, kind)
        return sha256, size

    def _hold(self, source: Path, sha256: str) -> str:
        assert self.held_dir is not None
        self.held_dir.mkdir(parents=True, exist_ok=True)
        held = self.held_dir / sha256
        temp = held.with_suffix(f".{uuid.uuid4().hex}.part")
        try:
            shutil.copyfile(source, temp)
            temp.replace(held)
        finally:
            temp.unlink(missing_ok=True)
        return held.as_uri()

    def evacuate(self) -> int:
        """Upload every artifact whose only copy is on this node to the shared location; return how many.

        Each held file is verified before upload; its shared copy is recorded and the held
        one marked deleted in one transaction, then the file is removed. One that fails to
        upload (the location still full or unreachable) stays held and is tried at the next
        call (the `disk_space` daemon calls this every minute, and a draining node's agent);
        then EvacuationError says how many stay held and why, with the count that moved.
        """
        with self.store.read() as conn:
            sole = queries.sole_copies_on_node(conn, self.node)
            held = {sha: [c for c in queries.copies_of(conn, sha) if c["node"] == self.node] for sha in sole}
            kinds = {sha: queries.get_artifact(conn, sha) for sha in sole}
        moved = 0
        failed: list[str] = []
        for sha256, copies in held.items():
            row = kinds[sha256]
            if row is None or not copies:
                continue
            try:
                moved += self._evacuate_one(sha256, ArtifactKind(row["kind"]), copies[0]["location"])
            except Exception as exc:  # noqa: BLE001 - any backend's refusal: it stays held until the next try
                log.warning("artifact %s still held on node %s: upload failed (%s)", sha256[:12], self.node, _what(exc))
                failed.append(f"{sha256[:12]}: {_what(exc)}")
        if failed:
            raise EvacuationError(
                f"node {self.node}: {len(failed)} artifact(s) whose only copy it holds could not be uploaded to "
                f"the artifact location ({failed[0]}{'; ...' if len(failed) > 1 else ''}); they stay held",
                moved,
            )
        return moved

    def _evacuate_one(self, sha256: str, kind: ArtifactKind, location: str) -> int:
        """Upload one held artifact and record it shared; 1 when it moved, 0 when its held copy was bad."""
        _fs, path = self.open_copy(location)
        local = Path(path)
        try:
            with local.open("rb") as handle:
                intact = hash_stream(handle)[0] == sha256
        except FileNotFoundError:
            intact = False  # removed by hand: the copy is gone
        if not intact:
            self._quarantine(location, sha256, None)
            return 0
        self._upload(local, self._path(kind, sha256), sha256, kind)
        now = self.clock()
        with self.store.transaction() as conn:
            queries.record_copy(conn, sha256=sha256, location=shared_key(kind, sha256), node=None, now=now)
            queries.set_copy_status(conn, sha256=sha256, location=location, status="deleted", now=now)
        local.unlink(missing_ok=True)
        log.info("artifact %s evacuated from node %s", sha256[:12], self.node)
        return 1

    def fetch(self, sha256: str) -> Path:
        """A verified local copy of an artifact, from the cache or downloaded into it."""
        check_sha256(sha256)
        with self.store.read() as conn:
            row = queries.get_artifact(conn, sha256)
            copies = queries.copies_of(conn, sha256) if row else []
        if row is None:
            raise ArtifactError(f"artifact {sha256} is not in the manifest")
        cached = self.cache.get(sha256)
        if cached is not None:
            with cached.open("rb") as handle:
                if hash_stream(handle)[0] == sha256:
                    return cached
            log.warning("cached copy of %s is corrupt; dropping it", sha256)
            self.cache.remove(sha256)
        kind = ArtifactKind(row["kind"])
        for copy in copies:
            path = self._download(copy["location"], sha256, kind)
            if path is not None:
                return path
        raise ArtifactError(f"artifact {sha256} has no intact copy left ({len(copies)} tried)")

    def signed_url(self, sha256: str, expires_s: float) -> str | None:
        """A URL that reads the shared copy of an artifact without credentials for `expires_s` seconds,
        when its object store signs URLs (S3, GCS); None otherwise (a file:// location, no shared copy)."""
        check_sha256(sha256)
        with self.store.read() as conn:
            copies = queries.copies_of(conn, sha256)
        for copy in copies:
            if copy["node"] is not None:
                continue  # a node's own copy: only the shared location signs
            if scheme_of(self.resolve(copy["location"])) not in _SIGNING_PROTOCOLS:
                return None
            try:
                fs, path = self.open_copy(copy["location"])
                return str(fs.sign(path, expiration=max(1, math.ceil(expires_s))))
            except Exception as exc:  # noqa: BLE001  (any backend's refusal: the server streams instead)
                log.warning("cannot sign a URL for artifact %s (%s: %s): the server streams it", sha256[:12],
                            type(exc).__name__, exc)  # fmt: skip
                return None
        return None

    def verify(self, sha256: str) -> int:
        """Re-hash every present copy of an artifact, quarantining bad ones; return how many are intact."""
        with self.store.read() as conn:
            copies = queries.copies_of(conn, sha256)
        intact = 0
        for copy in copies:
            fs, path = self.open_copy(copy["location"])
            try:
                with fs.open(path, "rb") as handle:
                    actual = hash_stream(handle)[0]
            except FileNotFoundError:
                actual = None
            if actual == sha256:
                intact += 1
            else:
                self._quarantine(copy["location"], sha256, actual)
        return intact

    def sole_copies_on(self, node: str) -> list[str]:
        """Artifacts that exist only on `node`: a node holding any must not be terminated."""
        with self.store.read() as conn:
            return queries.sole_copies_on_node(conn, node)

    def _present(self, target: str, size: int) -> bool:
        try:
            return bool(self.fs.exists(target)) and int(self.fs.size(target)) == size
        except OSError:
            return False

    def _upload(self, source: Path, target: str, sha256: str, kind: ArtifactKind) -> None:
        temp = f"{target}.{uuid.uuid4().hex}.part"
        self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        try:
            with source.open("rb") as reader, self.fs.open(temp, "wb") as writer:
                written, _size = copy_stream(reader, writer, self.gate, PRIORITY_OF_KIND[kind])
            if written != sha256:
                raise ArtifactError(f"{source} changed while it was uploaded; upload it again")
            self.fs.mv(temp, target)
        except BaseException:
            if self.fs.exists(temp):
                self.fs.rm_file(temp)
            raise

    def _remember_locally(self, source: Path, sha256: str) -> None:
        """Keep a copy in this node's cache; best effort: the artifact is stored, the cache only saves a fetch."""
        if self.cache.get(sha256) is not None:
            return
        temp = self.cache.temp_path(sha256)
        try:
            shutil.copyfile(source, temp)
            temp.replace(self.cache.path(sha256))
        except OSError as exc:
            temp.unlink(missing_ok=True)
            log.warning("artifact %s not cached on node %s (%s): fetched when needed", sha256[:12], self.node, exc)
            return
        self.cache.evict(keep=sha256)

    def _download(self, location: str, sha256: str, kind: ArtifactKind) -> Path | None:
        fs, path = self.open_copy(location)
        temp = self.cache.temp_path(sha256)
        try:
            with fs.open(path, "rb") as reader, temp.open("wb") as writer:
                actual, _size = copy_stream(reader, writer, self.gate, PRIORITY_OF_KIND[kind])
        except FileNotFoundError:
            temp.unlink(missing_ok=True)
            self._quarantine(location, sha256, None)
            return None
        if actual != sha256:
            temp.unlink(missing_ok=True)
            self._quarantine(location, sha256, actual)
            return None
        final = self.cache.path(sha256)
        temp.replace(final)
        self.cache.evict(keep=sha256)
        return final

    def _quarantine(self, location: str, sha256: str, actual: str | None) -> None:
        """Move a bad copy aside (kept for inspection), mark it, and announce it; `location` as the manifest has it."""
        fs, path = self.open_copy(location)
        if actual is not None:
            quarantine = f"{self.root}/quarantine/{sha256}.{uuid.uuid4().hex[:8]}"
            try:
                fs.makedirs(quarantine.rsplit("/", 1)[0], exist_ok=True)
                fs.mv(path, quarantine)
            except OSError as exc:
                log.warning("could not move corrupt copy %s aside: %s", location, exc)
        log.error("artifact %s: copy at %s is corrupt (found %s); quarantined", sha256, location, actual or "nothing")
        with self.store.transaction() as conn:
            queries.set_copy_status(conn, sha256=sha256, location=location, status="quarantined", now=self.clock())
            self.bus.publish(
                "ARTIFACT_CORRUPT",
                {"artifact_sha256": sha256, "location": self.resolve(location), "actual_sha256": actual},
            )
