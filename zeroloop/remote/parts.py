"""The worker's parts over HTTP: each satisfies the port (zeroloop.ports) its store-backed twin satisfies.

RemoteQueue, RemoteBus, RemoteArtifacts, RemoteModels, RemoteNodes and RemoteDaemonRecords
send the same operations to `zeroloop serve` that JobQueue, EventBus, Artifacts,
ModelRegistry, Nodes and DaemonRecords run against the store. Artifacts are
streamed both ways and their sha256 is checked on each side.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from zeroloop.artifacts.cache import LocalCache, check_sha256
from zeroloop.artifacts.repository import Artifact
from zeroloop.artifacts.transfer import ArtifactKind, hash_file, hash_stream
from zeroloop.cluster.nodes import NodeInfo, NodeStatus
from zeroloop.errors import ArtifactError
from zeroloop.events import catalogue
from zeroloop.queue.jobs import Capabilities, Job, Lease, Outcome
from zeroloop.remote import wire
from zeroloop.remote.client import Answer, ServerClient

log = logging.getLogger(__name__)
_CHUNK_BYTES = 1024 * 1024


def _claim_body(capabilities: Capabilities | None, types: Sequence[str] | None) -> dict[str, Any]:
    return {
        "capabilities": (capabilities or Capabilities()).model_dump(mode="json"),
        "types": list(types) if types is not None else None,
    }


def _event_body(event_type: str, payload: Any, dedup_key: str | None) -> dict[str, Any]:
    # Validate here too, so a bad payload fails on the worker with the bus's own error.
    model = catalogue.validate(event_type, payload)
    return {"type": event_type, "payload": model.model_dump(mode="json"), "dedup_key": dedup_key}


class RemoteQueue:
    """The job operations of a worker (JobPort) over the server."""

    def __init__(self, client: ServerClient) -> None:
        self.client = client

    def _check_node(self, node: str) -> None:
        if node != self.client.node:
            raise ValueError(f"this client acts as node {self.client.node!r}, not {node!r}")

    def claim(
        self, node: str, capabilities: Capabilities | None = None, types: Sequence[str] | None = None
    ) -> Lease | None:
        """Lease the next job `node` may run, or None."""
        self._check_node(node)
        answer = self.client.call("POST", "/jobs/claim", json=_claim_body(capabilities, types))
        return wire.lease_from_wire(answer["lease"])

    def claim_many(
        self, node: str, capabilities: Capabilities | None = None, types: Sequence[str] | None = None, *, limit: int
    ) -> list[Lease]:
        """Lease up to `limit` jobs `node` may run, in one request (one statement on the server)."""
        self._check_node(node)
        answer = self.client.call("POST", "/jobs/claim", json={**_claim_body(capabilities, types), "limit": limit})
        return [lease for row in answer["leases"] if (lease := wire.lease_from_wire(row)) is not None]

    def heartbeat(self, job_id: int, token: int) -> float:
        """Extend a lease; StaleLeaseError when it is no longer current."""
        return float(self.client.call("POST", f"/jobs/{job_id}/heartbeat", json={"token": token})["expires_at"])

    def complete(self, job_id: int, token: int, result: Any = None, *, event: Outcome | None = None) -> Job:
        """Record the result and its outcome event."""
        body = {"token": token, "result": result, "event": _event_body(*event) if event else None}
        return Job.from_row(self.client.call("POST", f"/jobs/{job_id}/complete", json=body)["job"])

    def complete_and_claim(
        self,
        job_id: int,
        token: int,
        result: Any = None,
        *,
        node: str,
        capabilities: Capabilities | None = None,
        types: Sequence[str] | None = None,
        event: Outcome | None = None,
    ) -> tuple[Job, Lease | None]:
        """Complete and lease the next job in one server transaction."""
        self._check_node(node)
        body = {
            "token": token,
            "result": result,
            "event": _event_body(*event) if event else None,
            "claim": _claim_body(capabilities, types),
        }
        answer = self.client.call("POST", f"/jobs/{job_id}/complete", json=body)
        return Job.from_row(answer["job"]), wire.lease_from_wire(answer["lease"])

    def fail(self, job_id: int, token: int, error: str, *, retryable: bool = True) -> Job:
        """Record a failed attempt."""
        body = {"token": token, "error": error[:4000], "retryable": retryable}
        return Job.from_row(self.client.call("POST", f"/jobs/{job_id}/fail", json=body)["job"])

    def release(self, job_id: int, token: int, reason: str) -> Job:
        """Give back an unfinished attempt: queued again at once, uncounted."""
        body = {"token": token, "reason": reason[:4000]}
        return Job.from_row(self.client.call("POST", f"/jobs/{job_id}/release", json=body)["job"])


class RemoteBus:
    """Publishing events (EventPort) over the server; only the types a worker publishes are accepted."""

    def __init__(self, client: ServerClient) -> None:
        self.client = client

    def publish(self, event_type: str, payload: Any, *, dedup_key: str | None = None) -> int:
        """Validate and publish one event; its id."""
        return int(self.client.call("POST", "/events", json=_event_body(event_type, payload, dedup_key))["id"])


@dataclass(frozen=True)
class ProductionModel:
    """A production model as the server names it: its config key and artifact."""

    config_key: str
    artifact_sha256: str


class RemoteModels:
    """The production models (ModelPort) as the server sees them."""

    def __init__(self, client: ServerClient) -> None:
        self.client = client

    def production(self, config_key: str) -> ProductionModel | None:
        """The production model of a config key, or None before the first promotion."""
        sha = self.client.call("GET", f"/models/{quote(config_key, safe='')}/production")["artifact_sha256"]
        return ProductionModel(config_key, sha) if sha else None

    def productions(self) -> list[ProductionModel]:
        """The production model of every pipeline that has one."""
        models = self.client.call("GET", "/models/production")["models"]
        return [ProductionModel(key, sha) for key, sha in sorted(models.items())]


class RemoteNodes:
    """Registering and heartbeating this node (NodePort) over the server."""

    def __init__(self, client: ServerClient) -> None:
        self.client = client

    def register(self, info: NodeInfo, utilisation: dict[str, Any] | None = None) -> None:
        """Register or re-register the node as active."""
        self.client.call("POST", "/register", json={"info": dataclasses.asdict(info), "utilisation": utilisation or {}})

    def heartbeat(self, node_id: str, utilisation: dict[str, Any]) -> NodeStatus | None:
        """Record a heartbeat; the node's status (None: register first)."""
        status = self.client.call("POST", "/heartbeat", json={"utilisation": utilisation})["status"]
        return NodeStatus(status) if status else None

    def leave(self, node_id: str) -> bool:
        """Mark this cleanly stopped node terminated."""
        return bool(self.client.call("POST", "/leave", json={})["left"])


class RemoteDaemonRecords:
    """A worker's daemon records (DaemonRecordPort), written by the server."""

    def __init__(self, client: ServerClient) -> None:
        self.client = client

    def write(self, rows: list[dict[str, Any]], crash_loops: list[dict[str, Any]]) -> None:
        """Upsert the rows and publish the crash loops, in one server transaction.

        An error text is sent as the server takes it (wire.Text): NULs made visible, its last 4000 characters.
        """
        rows = [{**row, "last_error": _error_text(row.get("last_error"))} for row in rows]
        loops = [{**loop, "last_error": _error_text(loop.get("last_error")) or ""} for loop in crash_loops]
        self.client.call("POST", "/daemons", json={"rows": rows, "crash_loops": loops})


class RemoteArtifacts:
    """Artifacts (ArtifactPort) through the server, with this node's own verified cache."""

    def __init__(self, client: ServerClient, cache: LocalCache) -> None:
        self.client = client
        self.cache = cache

    def put(
        self,
        source: Path,
        kind: ArtifactKind,
        *,
        config_key: str | None = None,
        meta: dict[str, Any] | None = None,
        producer_job_id: int | None = None,
    ) -> Artifact:
        """Stream a local file to the server, which checks its sha256 before storing and recording it."""
        kind = ArtifactKind(kind)
        sha256, size = hash_file(source)
        params: dict[str, Any] = {"kind": kind.value}
        if config_key is not None:
            params["config_key"] = config_key
        if producer_job_id is not None:
            params["producer_job_id"] = producer_job_id
        headers = {wire.META_HEADER: json.dumps(meta or {}), "Content-Length": str(size)}
        answer = self.client.call(
            "PUT", f"/artifacts/{sha256}", params=params, headers=headers, content=_FileBody(source)
        )
        self._remember(source, sha256)
        return Artifact(answer["sha256"], ArtifactKind(answer["kind"]), int(answer["size_bytes"]), config_key)

    def evacuate(self) -> int:
        """Nothing to upload: behind the server an upload reaches it or fails its job, so no node holds an only copy."""
        return 0

    def fetch(self, sha256: str) -> Path:
        """A verified local copy: from the cache, or streamed from the server and checked on arrival."""
        check_sha256(sha256)
        cached = self.cache.get(sha256)
        if cached is not None:
            with cached.open("rb") as handle:
                if hash_stream(handle)[0] == sha256:
                    return cached
            self.cache.remove(sha256)
        temp = self.cache.temp_path(sha256)
        try:
            with self.client.request("GET", f"/artifacts/{sha256}") as response:
                signed = response.header("Location") if response.status == 307 else None
                if signed:
                    response.read()  # a redirect's empty body, so the connection carries the next request
                else:
                    arrived = _save(response, temp)
            if signed:  # the object store serves it: the server connection is back in the pool meanwhile
                with self.client.signed(signed) as stored:
                    arrived = _save(stored, temp)
                if arrived != sha256:  # a bad copy in the store: the server streams it, verifying and
                    log.warning("artifact %s arrived from the store as %s; asking the server", sha256, arrived)
                    with self.client.request("GET", f"/artifacts/{sha256}", params={"stream": "1"}) as response:
                        arrived = _save(response, temp)  # quarantining copies that miss their digest
            if arrived != sha256:
                raise ArtifactError(f"artifact {sha256} arrived as {arrived}: dropped; fetch it again")
            final = self.cache.path(sha256)
            temp.replace(final)
        finally:
            temp.unlink(missing_ok=True)
        self.cache.evict(keep=sha256)
        return final

    def _remember(self, source: Path, sha256: str) -> None:
        if self.cache.get(sha256) is not None:
            return
        temp = self.cache.temp_path(sha256)
        shutil.copyfile(source, temp)
        temp.replace(self.cache.path(sha256))
        self.cache.evict(keep=sha256)


def _error_text(text: Any) -> str | None:
    """An exception's text as the worker API takes it: NULs shown as \\x00, at most its last 4000 characters."""
    if text is None:
        return None
    shown = str(text).replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
    return shown if len(shown) <= 4000 else "..." + shown[-3997:]


def _save(answer: Answer, path: Path) -> str:
    """Write a response body to `path` as it arrives; its sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for chunk in answer.iter_bytes(_CHUNK_BYTES):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


class _FileBody:
    """A file's bytes in chunks, read afresh each time it is iterated (so a retried upload sends them all again)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __iter__(self) -> Iterator[bytes]:
        with self.path.open("rb") as handle:
            while chunk := handle.read(_CHUNK_BYTES):
                yield chunk
