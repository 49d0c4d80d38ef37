"""What each part of a process may touch, as protocols: the daemons, the executor and the read model are typed on these.

Two sets of parts, each satisfied by what opens it:

- `WorkerParts`: what a worker may use (settings, queue, bus, artifacts, models, nodes,
  daemon records), each a small port below. The App (over the store) and
  `zeroloop.remote.app.RemoteApp` (over `zeroloop serve`) both satisfy it, so a worker
  runs one code path on a trusted network and behind the server, and mypy proves that a
  worker daemon never reaches the store: the factories of the worker profiles' daemons
  take `DaemonContext[WorkerParts]`.
- `AppParts`: everything the App opens (the store and every manager over it). Leader-only
  daemons, the read model and the admin actions (`zeroloop.control`) take this, so no
  module below the composition root ever names the App itself.

Each port names only the operations a worker uses; the managers offer more.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from zeroloop.daemons.daemon import DaemonParts

if TYPE_CHECKING:
    from zeroloop.artifacts.cache import LocalCache
    from zeroloop.artifacts.repository import Artifact, Artifacts
    from zeroloop.artifacts.transfer import ArtifactKind
    from zeroloop.cluster.breakers import CircuitBreakers
    from zeroloop.cluster.health import HealthMonitor
    from zeroloop.cluster.leases import LeaseManager
    from zeroloop.cluster.nodes import NodeInfo, Nodes, NodeStatus
    from zeroloop.daemons.records import DaemonRecords
    from zeroloop.events.bus import EventBus
    from zeroloop.fleet.manager import Fleet
    from zeroloop.pipeline.registry import ModelRegistry
    from zeroloop.queue.jobs import Capabilities, Job, Lease, Outcome
    from zeroloop.queue.manager import JobQueue
    from zeroloop.store.database import Store


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

    @property
    def cache(self) -> LocalCache:
        """This node's verified local cache of artifacts."""
        ...

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
    """A model, as far as a worker needs it: its config key and its artifact."""

    @property
    def config_key(self) -> str:
        """The config key it plays, e.g. connect_four_2p."""
        ...

    @property
    def artifact_sha256(self) -> str:
        """The sha256 of the model's file."""
        ...


class ModelPort(Protocol):
    """Find the production model of a config key (ModelRegistry; RemoteModels)."""

    def production(self, config_key: str) -> ModelRef | None:
        """The production model, or None before the first promotion."""
        ...

    def productions(self) -> Sequence[ModelRef]:
        """The production model of every config key that has one."""
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


class WorkerParts(DaemonParts, Protocol):
    """What a worker may touch: the App over the store, or RemoteApp over `zeroloop serve`."""

    @property
    def queue(self) -> JobPort:
        """Claim, heartbeat and report jobs."""
        ...

    @property
    def bus(self) -> EventPort:
        """Publish events."""
        ...

    @property
    def artifacts(self) -> ArtifactPort:
        """Upload and fetch artifacts."""
        ...

    @property
    def models(self) -> ModelPort:
        """Find production models."""
        ...

    @property
    def nodes(self) -> NodePort:
        """Register and heartbeat this node."""
        ...


class AppParts(WorkerParts, Protocol):
    """Everything the App opens, as the parts below the composition root may name it (leader-only daemons, control)."""

    @property
    def clock(self) -> Callable[[], float]:
        """The time (epoch seconds) every part reads."""
        ...

    @property
    def store(self) -> Store:
        """The one store."""
        ...

    @property
    def bus(self) -> EventBus:
        """The event bus over the store."""
        ...

    @property
    def queue(self) -> JobQueue:
        """The work queue over the store."""
        ...

    @property
    def artifacts(self) -> Artifacts:
        """The artifact store and its manifest."""
        ...

    @property
    def models(self) -> ModelRegistry:
        """The model registry."""
        ...

    @property
    def nodes(self) -> Nodes:
        """The nodes of the cluster."""
        ...

    @property
    def leases(self) -> LeaseManager:
        """Leader and role leases."""
        ...

    @property
    def breakers(self) -> CircuitBreakers:
        """Per-node and per-stage circuit breakers."""
        ...

    @property
    def health(self) -> HealthMonitor:
        """The system health score and pause rule."""
        ...

    @property
    def daemon_records(self) -> DaemonRecords:
        """The daemons table."""
        ...

    @property
    def fleet(self) -> Fleet:
        """Provider pools and their machines."""
        ...
