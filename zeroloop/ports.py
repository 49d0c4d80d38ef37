"""What a worker process does, as small protocols: the store-backed managers and the HTTP client both satisfy them.

The job executor, the node agent and the daemon manager are written against these, so a
worker runs one code path whether it talks to the store directly (a trusted network) or
to `zeroloop serve` (zeroloop.remote). Each protocol names only the operations a worker
uses; the managers offer more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from zeroloop.artifacts.repository import Artifact
    from zeroloop.artifacts.transfer import ArtifactKind
    from zeroloop.cluster.nodes import NodeInfo, NodeStatus
    from zeroloop.queue.jobs import Capabilities, Job, Lease

# A job's own outcome event, published with its result: (type, payload, dedup key).
Outcome = tuple[str, Mapping[str, Any], str | None]


class JobPort(Protocol):
    """Lease, heartbeat, complete and fail jobs with fencing tokens (JobQueue; RemoteQueue)."""

    def claim(
        self, node: str, capabilities: Capabilities | None = None, types: Sequence[str] | None = None
    ) -> Lease | None:
        """Lease the next job `node` may run, or None."""
        ...

    def heartbeat(self, job_id: int, token: int) -> float:
        """Extend a lease; its new expiry (epoch seconds)."""
        ...

    def complete(self, job_id: int, token: int, result: Any = None, *, event: Outcome | None = None) -> Job:
        """Record the result (and its outcome event) of the attempt held under `token`."""
        ...

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
        """Complete, then lease `node`'s next job, in one transaction."""
        ...

    def fail(self, job_id: int, token: int, error: str, *, retryable: bool = True) -> Job:
        """Record a failed attempt."""
        ...

    def release(self, job_id: int, token: int, reason: str) -> Job:
        """Give back an unfinished attempt (a draining worker): queued again at once, uncounted."""
        ...


class EventPort(Protocol):
    """Publish one event (EventBus; RemoteBus)."""

    def publish(self, event_type: str, payload: Any, *, dedup_key: str | None = None) -> int:
        """Validate and append one event; its id."""
        ...


class ArtifactPort(Protocol):
    """Store and fetch content-addressed artifacts (Artifacts; RemoteArtifacts)."""

    def put(
        self,
        source: Path,
        kind: ArtifactKind,
        *,
        config_key: str | None = None,
        meta: dict[str, Any] | None = None,
        producer_job_id: int | None = None,
    ) -> Artifact:
        """Upload a local file (verified) and record it."""
        ...

    def fetch(self, sha256: str) -> Path:
        """A verified local copy of an artifact."""
        ...

    def evacuate(self) -> int:
        """Upload what this node holds the only copy of; how many artifacts."""
        ...


class ModelRef(Protocol):
    """A model, as far as a worker needs it: its artifact."""

    @property
    def artifact_sha256(self) -> str:
        """The sha256 of the model's file."""
        ...


class ModelPort(Protocol):
    """Find the production model of a config key (ModelRegistry; RemoteModels)."""

    def production(self, config_key: str) -> ModelRef | None:
        """The production model, or None before the first promotion."""
        ...


class NodePort(Protocol):
    """Register a node, heartbeat it, and leave (Nodes; RemoteNodes)."""

    def register(self, info: NodeInfo, utilisation: dict[str, Any] | None = None) -> None:
        """Register or re-register the node as active."""
        ...

    def heartbeat(self, node_id: str, utilisation: dict[str, Any]) -> NodeStatus | None:
        """Record a heartbeat; the node's status, None if unknown."""
        ...

    def leave(self, node_id: str) -> bool:
        """Mark a cleanly stopped node terminated."""
        ...


class DaemonRecordPort(Protocol):
    """Write a process's daemon records and announce its crash loops (DaemonRecords; RemoteDaemonRecords)."""

    def write(self, rows: list[dict[str, Any]], crash_loops: list[dict[str, Any]]) -> None:
        """Upsert `rows` (the daemons table) and publish a DAEMON_CRASH_LOOP per payload, in one transaction."""
        ...
