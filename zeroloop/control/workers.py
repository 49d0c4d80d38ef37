"""What `zeroloop serve` does for a worker it does not trust: every worker API operation, checked, over the store.

The server is HTTP only (parsing, authentication, mapping errors); each of its worker
endpoints calls one operation here, for one node, with the body already validated
(`zeroloop.remote.wire`). What a direct worker on a trusted network may simply do, a
worker behind the server must prove it may:

- it claims only once registered and active (`registered=True` on every claim);
- a job's outcome event is accepted only with that job's completion, from the node
  holding its current lease (`acting`), and only when it names that job and the
  artifact that job produced: present in the manifest, uploaded for that job, of the
  job type's kind, not empty (`check_outcome`);
- an artifact is uploaded only as the output of a job the node holds;
- the events it publishes itself are progress of a job it holds and its own daemons'
  crash loops, and carry its node; an event of another node is refused;
- an admin may quarantine a node's results, which keeps them out of training windows
  (`control.actions.quarantine`, read by the coordinator through `store.queries.quarantine`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from zeroloop.artifacts.repository import Artifact
from zeroloop.cluster.nodes import Nodes, NodeStatus
from zeroloop.control.tokens import Principal, Tokens
from zeroloop.daemons.records import DaemonRecords
from zeroloop.errors import ArtifactError, Forbidden, QueueError
from zeroloop.events.bus import EventBus
from zeroloop.pipeline import jobs as job_types
from zeroloop.pipeline.registry import ModelRegistry
from zeroloop.ports import AppParts
from zeroloop.queue.jobs import Capabilities, Job, JobStatus, Lease, Outcome
from zeroloop.queue.manager import JobQueue
from zeroloop.remote import wire
from zeroloop.store.queries import artifacts as artifact_queries


class WorkerService:
    """The worker API's operations over one App, each acting for one node."""

    def __init__(self, app: AppParts, tokens: Tokens) -> None:
        self.app = app
        self.tokens = tokens

    def _bus(self, node: str) -> EventBus:
        return EventBus(self.app.store, node=node, source=f"worker/{node}")

    def _queue(self, node: str) -> JobQueue:
        return JobQueue(self.app.store, self._bus(node), self.app.settings)

    # --- settings, models, credentials -------------------------------------------------------

    def shared_settings(self) -> dict[str, Any]:
        """The settings a worker must share with the cluster: workload and queue (never a URL or a secret)."""
        settings = self.app.settings
        return {"workload": settings.workload.model_dump(mode="json"), "queue": settings.queue.model_dump(mode="json")}

    def production_models(self, node: str) -> dict[str, str]:
        """The production model's artifact of every pipeline that has one: {config_key: sha256}."""
        registry = ModelRegistry(self.app.store, self._bus(node))
        return {model.config_key: model.artifact_sha256 for model in registry.productions()}

    def production_model(self, node: str, config_key: str) -> str | None:
        """The production model's artifact of a config key, or None before the first promotion."""
        model = ModelRegistry(self.app.store, self._bus(node)).production(config_key)
        return model.artifact_sha256 if model else None

    def credential(self, principal: Principal) -> tuple[str, float] | None:
        """A fresh node-bound credential for a worker token's node (text, expiry); None for an admin token,
        which keeps presenting itself, or when credentials are off (`server.credential_s` = 0)."""
        lifetime = self.app.settings.server.credential_s
        if lifetime <= 0 or principal.node is None:
            return None
        return self.tokens.issue_credential(principal, lifetime)

    def refreshed(self, principal: Principal) -> tuple[str, float] | None:
        """A new credential when the one presented is past half its life (the heartbeat carries it), else None."""
        lifetime = self.app.settings.server.credential_s
        if principal.credential is None or principal.expires_at is None or lifetime <= 0:
            return None
        if principal.expires_at - self.app.clock() > lifetime / 2:
            return None
        return self.tokens.issue_credential(principal, lifetime)

    # --- nodes --------------------------------------------------------------------------------

    def register(self, node: str, body: wire.RegisterBody) -> None:
        """Register (or re-register) the node as active; it may describe only itself."""
        if body.info.id != node:
            raise Forbidden(f"node {node!r} cannot register as {body.info.id!r}")
        Nodes(self.app.store, self._bus(node)).register(body.info.info(), body.utilisation.stored())

    def heartbeat(self, node: str, utilisation: wire.Utilisation) -> NodeStatus | None:
        """Record the node's load; its status (None: unknown, register first)."""
        return Nodes(self.app.store, self._bus(node)).heartbeat(node, utilisation.stored())

    def leave(self, node: str) -> bool:
        """Mark a cleanly stopped node terminated."""
        return Nodes(self.app.store, self._bus(node)).leave(node)

    def write_daemons(self, node: str, body: wire.DaemonsBody) -> int:
        """Write the node's own daemon records and publish its own crash loops, in one transaction."""
        if any(row.node != node for row in body.rows):
            raise Forbidden(f"node {node!r} may write only its own daemon records")
        if any(loop.node != node for loop in body.crash_loops):
            raise Forbidden(f"node {node!r} may announce only its own daemons' crash loops")
        rows = [row.model_dump(mode="json") for row in body.rows]
        DaemonRecords(self.app.store, self._bus(node)).write(rows, [loop.model_dump() for loop in body.crash_loops])
        return len(rows)

    # --- jobs ---------------------------------------------------------------------------------

    def claim(self, node: str, capabilities: Capabilities, types: Sequence[str] | None, limit: int) -> list[Lease]:
        """Lease up to `limit` jobs the node may run: none until it is registered and active.

        Not an error: a worker's executor may ask a moment before its node agent's first
        registration lands, and simply asks again.
        """
        return self._queue(node).claim_many(node, capabilities, types, limit=limit, registered=True)

    def extend(self, node: str, job_id: int, token: int) -> float:
        """Extend the lease held under `token`; StaleLeaseError when it is no longer current."""
        queue = self._queue(node)
        self._held(queue, node, job_id, token)
        return queue.heartbeat(job_id, token)

    def complete(self, node: str, job_id: int, body: wire.CompleteBody) -> tuple[Job, list[Lease]]:
        """Complete the attempt with its outcome event (checked); with `claim`, lease more in the same transaction.

        The lease's node and the outcome are checked inside the completing transaction; the
        job is read again only to explain a refusal (404 for an unknown id, 403 for another
        node's current lease, else the queue's own 409).
        """
        queue = self._queue(node)
        event = _outcome(body.event)
        check = check_outcome if event is not None else None
        try:
            if body.claim is None:
                return queue.complete(job_id, body.token, body.result, event=event, acting=node, check=check), []
            claim = body.claim
            done, leases = queue.complete_and_claim_many(
                job_id, body.token, body.result, node=node, capabilities=claim.capabilities.capabilities(),
                types=claim.types, event=event, acting=node, limit=claim.limit, registered=True, check=check,
            )  # fmt: skip
        except QueueError:
            self._held(queue, node, job_id, body.token)
            raise
        return done, leases

    def fail(self, node: str, job_id: int, token: int, error: str, *, retryable: bool) -> Job:
        """Record a failed attempt: re-queued after a backoff, or dead."""
        queue = self._queue(node)
        self._held(queue, node, job_id, token)
        return queue.fail(job_id, token, error, retryable=retryable)

    def release(self, node: str, job_id: int, token: int, reason: str) -> Job:
        """Give back an unfinished attempt (the worker is draining): queued again at once, uncounted."""
        queue = self._queue(node)
        self._held(queue, node, job_id, token)
        return queue.release(job_id, token, reason)

    @staticmethod
    def _held(queue: JobQueue, node: str, job_id: int, token: int) -> None:
        """Refuse a job id that does not exist (404), or a current token presented by another node (403)."""
        try:
            job = queue.get(job_id)
        except QueueError:
            raise wire.NotFound(f"no job {job_id}: it may have been pruned; drop this attempt") from None
        if job.lease_token == token and job.lease_node != node:
            raise Forbidden(f"job {job_id} is leased to node {job.lease_node!r}, not {node!r}")

    # --- events -------------------------------------------------------------------------------

    def publish(self, node: str, body: wire.EventBody) -> int:
        """Publish one event a worker may publish of itself: progress of a job it holds, its own crash loops."""
        if body.type in wire.COMPLETION_EVENTS:
            raise Forbidden(f"{body.type} is published only with its job's completion (POST jobs/{{id}}/complete)")
        if body.type not in wire.WORKER_EVENTS:
            raise Forbidden(f"workers publish only {', '.join(sorted(wire.WORKER_EVENTS))}; not {body.type}")
        payload = body.payload
        named = payload.get("node")
        if named is not None and named != node:
            raise Forbidden(f"node {node!r} may publish only events of its own, not of node {named!r}")
        if "job_id" in payload:
            self._holds_running(node, payload.get("job_id"), body.type)
        return self._bus(node).publish(body.type, payload, dedup_key=body.dedup_key)

    def _holds_running(self, node: str, job_id: Any, event_type: str) -> None:
        if isinstance(job_id, bool) or not isinstance(job_id, int) or not 0 < job_id <= wire.INT64_MAX:
            raise wire.BadRequest(f"invalid request: {event_type} names job {job_id!r}, which is no job id")
        try:
            job = self._queue(node).get(job_id)
        except QueueError:
            raise wire.NotFound(f"{event_type} names job {job_id}, which does not exist") from None
        if job.status is not JobStatus.RUNNING or job.lease_node != node:
            raise Forbidden(f"{event_type} names job {job_id}, which node {node!r} does not hold")

    # --- artifacts ----------------------------------------------------------------------------

    def known_artifact(self, sha256: str) -> bool:
        """Whether the manifest has the artifact."""
        with self.app.store.read() as conn:
            return artifact_queries.get_artifact(conn, sha256) is not None

    def signed_url(self, sha256: str) -> str | None:
        """A URL the object store signed for `server.presigned_url_s`, or None (0, or a backend that cannot sign)."""
        lifetime = self.app.settings.server.presigned_url_s
        return self.app.artifacts.signed_url(sha256, lifetime) if lifetime > 0 else None

    def fetch(self, sha256: str) -> Path:
        """A verified local copy of an artifact (bad copies are quarantined on the way)."""
        return self.app.artifacts.fetch(sha256)

    def check_upload(self, node: str, query: wire.UploadQuery) -> None:
        """Refuse an upload that is not the output of a running job the node holds (before its bytes are read)."""
        try:
            job = self._queue(node).get(query.producer_job_id)
        except QueueError:
            raise wire.NotFound(f"an upload names job {query.producer_job_id}, which does not exist") from None
        if job.status is not JobStatus.RUNNING or job.lease_node != node:
            raise Forbidden(f"node {node!r} does not hold job {job.id}: it uploads only its own jobs' output")
        expected = job_types.TYPES.get(job.type)
        if expected is not None and expected.kind is not query.kind:
            raise ArtifactError(f"job {job.id} is a {job.type} job, whose output is a {expected.kind.value}, "
                                f"not a {query.kind.value}")  # fmt: skip
        if query.config_key is not None and query.config_key != job.config_key:
            raise ArtifactError(f"job {job.id} is of config {job.config_key!r}, not {query.config_key!r}")

    def store_upload(self, node: str, path: Path, query: wire.UploadQuery, meta: Mapping[str, Any]) -> Artifact:
        """Store an uploaded file (its sha256 already checked) as the output of the job it names."""
        self.check_upload(node, query)  # again: the lease may have ended while the bytes arrived
        config_key = query.config_key
        return self.app.artifacts.put(
            path, query.kind, config_key=config_key, meta=dict(meta), producer_job_id=query.producer_job_id
        )


def _outcome(event: wire.EventBody | None) -> Outcome | None:
    if event is None:
        return None
    if event.type not in wire.COMPLETION_EVENTS:
        raise Forbidden(f"a job completes with one of {', '.join(sorted(wire.COMPLETION_EVENTS))}, not {event.type}")
    return (event.type, event.payload, event.dedup_key)


def check_outcome(conn: Any, row: Mapping[str, Any], event: Outcome | None) -> None:
    """Refuse (inside the completing transaction) an outcome that is not the job's own: its type's outcome event,
    naming the job and its config key, and the artifact the job produced (in the manifest, uploaded for this
    job, of the type's kind, not empty), named alike in the result and in the event."""
    if event is None:
        return
    job_id = row["id"]
    declared = job_types.TYPES.get(row["type"])
    if declared is None:
        raise Forbidden(f"job {job_id} is a {row['type']} job, which completes with no outcome event")
    event_type, payload, _dedup = event
    if event_type != declared.outcome.type:
        raise Forbidden(f"job {job_id} is a {row['type']} job: it completes with {declared.outcome.type}, "
                        f"not {event_type}")  # fmt: skip
    if payload.get("job_id") != job_id or payload.get("config_key") != row["config_key"]:
        raise Forbidden(f"the {event_type} sent with job {job_id} names job {payload.get('job_id')!r} of "
                        f"{payload.get('config_key')!r}, not this job")  # fmt: skip
    result = row["result"]
    sha256 = result.get("artifact_sha256") if isinstance(result, dict) else None
    if not isinstance(sha256, str):
        raise ArtifactError(f"job {job_id}'s result names no artifact_sha256: its output must be uploaded first")
    artifact = artifact_queries.get_artifact(conn, sha256)
    if artifact is None:
        raise ArtifactError(f"job {job_id}'s result names artifact {sha256}, which is not in the manifest")
    if artifact["producer_job_id"] != job_id:
        raise Forbidden(f"artifact {sha256} was not uploaded as job {job_id}'s output")
    if artifact["kind"] != declared.kind.value:
        raise ArtifactError(f"artifact {sha256} is a {artifact['kind']}; a {row['type']} job produces a "
                            f"{declared.kind.value}")  # fmt: skip
    if artifact["size_bytes"] <= 0:
        raise ArtifactError(f"artifact {sha256} is empty: a {row['type']} job's output holds data")
    for key, value in payload.items():
        if key.endswith("_sha256") and value != sha256:
            raise Forbidden(f"the {event_type} of job {job_id} names {key} {value!r}, not its artifact {sha256}")
