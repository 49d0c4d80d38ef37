"""The worker API: everything a worker does through the store, as HTTP under /api/v1/worker/{node}/.

Every endpoint names the node it acts for; a worker token may act only as its own node
(`Principal.may_act_as`). Job operations present the same fencing tokens as over the
store, and the server also refuses a token presented by a node that does not hold the
lease. Events a worker publishes and the rows it writes carry its node, as they would
over a direct connection.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from zeroloop.app import App
from zeroloop.artifacts.cache import check_sha256
from zeroloop.artifacts.transfer import ArtifactKind
from zeroloop.cluster.nodes import NodeInfo, NodeRegistry, NodeStatus
from zeroloop.errors import ArtifactError, Forbidden, QueueError
from zeroloop.events.bus import EventBus
from zeroloop.pipeline.registry import ModelRegistry
from zeroloop.ports import Outcome
from zeroloop.queue.jobs import Job
from zeroloop.queue.manager import JobQueue
from zeroloop.remote import wire
from zeroloop.server.tokens import Principal, Role, Tokens
from zeroloop.store.queries import artifacts as artifact_queries
from zeroloop.store.queries import daemons as daemon_queries
from zeroloop.store.queries import pipelines as pipeline_queries

router = APIRouter(prefix=wire.API)
_UPLOAD = re.compile(rf"^{wire.API}/[^/]+/artifacts/[^/]+$")


def is_upload(method: str, path: str) -> bool:
    """Whether a request is an artifact upload (streamed, with its own size limit)."""
    return method == "PUT" and _UPLOAD.match(path) is not None


def _zl(request: Request) -> App:
    app: App = request.app.state.zl
    return app


def acting_node(request: Request, node: str, authorization: Annotated[str | None, Header()] = None) -> str:
    """The node a request acts for, once its token may act as that node (AuthError/Forbidden otherwise)."""
    tokens: Tokens = request.app.state.tokens
    presented = authorization.removeprefix("Bearer ").strip() if authorization else None
    if not presented and request.app.state.loopback and not tokens.any_usable():
        principal = Principal("local", Role.ADMIN, None)  # loopback with no tokens at all: the local trust
    else:
        principal = tokens.check(presented)
    principal.may_act_as(node)
    return node


Node = Annotated[str, Depends(acting_node)]


def _bus(app: App, node: str) -> EventBus:
    return EventBus(app.store, node=node, source=f"worker/{node}")


def _queue(app: App, node: str) -> JobQueue:
    return JobQueue(app.store, _bus(app, node), app.settings)


def _held(queue: JobQueue, node: str, job_id: int, token: int) -> None:
    """Refuse a job id that does not exist (404), or a current token presented by another node (403)."""
    try:
        job = queue.get(job_id)
    except QueueError:
        raise wire.NotFound(f"no job {job_id}: it may have been pruned; drop this attempt") from None
    if job.lease_token == token and job.lease_node != node:
        raise Forbidden(f"job {job_id} is leased to node {job.lease_node!r}, not {node!r}")


def _outcome(event: wire.EventBody | None) -> Outcome | None:
    if event is None:
        return None
    if event.type not in wire.COMPLETION_EVENTS:
        raise Forbidden(f"a job completes with one of {', '.join(sorted(wire.COMPLETION_EVENTS))}, not {event.type}")
    return (event.type, event.payload, event.dedup_key)


def _json(content: dict[str, Any]) -> Response:
    """A JSON answer, serialised once: worker answers are plain JSON values already, so FastAPI's
    response model and encoder (a measurable share of a hot request) are skipped."""
    return Response(json.dumps(content, separators=(",", ":")).encode(), media_type="application/json")


def _job(job: Job) -> dict[str, Any]:
    return wire.job_to_wire(job)


# --- settings and models -----------------------------------------------------------------


@router.get("/{node}/settings", response_model=None)
def worker_settings(request: Request, node: Node) -> Response:
    """The settings a worker must share with the cluster: workload and queue (never a URL or a secret)."""
    settings = _zl(request).settings
    shared = {"workload": settings.workload.model_dump(mode="json"), "queue": settings.queue.model_dump(mode="json")}
    return _json(shared)


@router.get("/{node}/models/production", response_model=None)
def production_models(request: Request, node: Node) -> Response:
    """The production model's artifact of every pipeline that has one: {config_key: sha256}."""
    app = _zl(request)
    registry = ModelRegistry(app.store, _bus(app, node))
    with app.store.read() as conn:
        keys = [state["config_key"] for state in pipeline_queries.list_pipelines(conn)]
    found = {key: registry.production(key) for key in keys}
    return _json({"models": {key: model.artifact_sha256 for key, model in found.items() if model is not None}})


@router.get("/{node}/models/{config_key}/production", response_model=None)
def production_model(request: Request, node: Node, config_key: str) -> Response:
    """The production model's artifact of a config key, or null before the first promotion."""
    app = _zl(request)
    model = ModelRegistry(app.store, _bus(app, node)).production(config_key)
    return _json({"artifact_sha256": model.artifact_sha256 if model else None})


# --- nodes -------------------------------------------------------------------------------


@router.post("/{node}/register", response_model=None)
def register(request: Request, node: Node, body: wire.RegisterBody) -> Response:
    """Register (or re-register) the node as active."""
    app = _zl(request)
    try:
        info = NodeInfo(**body.info)
    except TypeError as exc:
        raise wire.BadRequest(f"info is not a node description: {exc}") from None
    if info.id != node:
        raise Forbidden(f"node {node!r} cannot register as {info.id!r}")
    NodeRegistry(app.store, _bus(app, node)).register(info, body.utilisation)
    return _json({"registered": node})


@router.post("/{node}/heartbeat", response_model=None)
def heartbeat(request: Request, node: Node, body: wire.HeartbeatBody) -> Response:
    """Record the node's load; answer its status (null: unknown, register first)."""
    app = _zl(request)
    status: NodeStatus | None = NodeRegistry(app.store, _bus(app, node)).heartbeat(node, body.utilisation)
    return _json({"status": status.value if status else None})


@router.post("/{node}/leave", response_model=None)
def leave(request: Request, node: Node) -> Response:
    """Mark a cleanly stopped node terminated."""
    app = _zl(request)
    return _json({"left": NodeRegistry(app.store, _bus(app, node)).leave(node)})


@router.post("/{node}/daemons", response_model=None)
def daemons(request: Request, node: Node, body: wire.DaemonsBody) -> Response:
    """Write the node's daemon records and publish the crash loops it detected, in one transaction."""
    app = _zl(request)
    if any(row.node != node for row in body.rows):
        raise Forbidden(f"node {node!r} may write only its own daemon records")
    bus = _bus(app, node)
    with app.store.transaction() as conn:
        for row in body.rows:
            daemon_queries.upsert_daemon(conn, row.model_dump())
        for payload in body.crash_loops:
            bus.publish("DAEMON_CRASH_LOOP", payload)
    return _json({"written": len(body.rows)})


# --- jobs --------------------------------------------------------------------------------


@router.post("/{node}/jobs/claim", response_model=None)
def claim(request: Request, node: Node, body: wire.ClaimBody) -> Response:
    """Lease the next job this node may run; `lease` is null when there is none."""
    lease = _queue(_zl(request), node).claim(node, body.capabilities, body.types)
    return _json({"lease": wire.lease_to_wire(lease)})


@router.post("/{node}/jobs/{job_id}/heartbeat", response_model=None)
def extend(request: Request, node: Node, job_id: int, body: wire.TokenBody) -> Response:
    """Extend the lease held under `token`; 409 when it is no longer current."""
    queue = _queue(_zl(request), node)
    _held(queue, node, job_id, body.token)
    return _json({"expires_at": queue.heartbeat(job_id, body.token)})


@router.post("/{node}/jobs/{job_id}/complete", response_model=None)
def complete(request: Request, node: Node, job_id: int, body: wire.CompleteBody) -> Response:
    """Complete the attempt with its outcome event; with `claim`, lease the next job in the same transaction.

    The hot path: the lease's node is checked inside the completing transaction, and the
    job is read again only to explain a refusal (404 for an unknown id, 403 for another
    node's current lease, else the queue's own 409).
    """
    queue = _queue(_zl(request), node)
    event = _outcome(body.event)
    try:
        if body.claim is None:
            done = queue.complete(job_id, body.token, body.result, event=event, acting=node)
            return _json({"job": _job(done), "lease": None})
        done, lease = queue.complete_and_claim(
            job_id, body.token, body.result, node=node, capabilities=body.claim.capabilities, types=body.claim.types,
            event=event, acting=node,
        )  # fmt: skip
    except QueueError:
        _held(queue, node, job_id, body.token)
        raise
    return _json({"job": _job(done), "lease": wire.lease_to_wire(lease)})


@router.post("/{node}/jobs/{job_id}/fail", response_model=None)
def fail(request: Request, node: Node, job_id: int, body: wire.FailBody) -> Response:
    """Record a failed attempt: re-queued after a backoff, or dead."""
    queue = _queue(_zl(request), node)
    _held(queue, node, job_id, body.token)
    return _json({"job": _job(queue.fail(job_id, body.token, body.error, retryable=body.retryable))})


@router.post("/{node}/jobs/{job_id}/release", response_model=None)
def release(request: Request, node: Node, job_id: int, body: wire.ReleaseBody) -> Response:
    """Give back an unfinished attempt (the worker is draining): queued again at once, uncounted."""
    queue = _queue(_zl(request), node)
    _held(queue, node, job_id, body.token)
    return _json({"job": _job(queue.release(job_id, body.token, body.reason))})


# --- events ------------------------------------------------------------------------------


@router.post("/{node}/events", response_model=None)
def publish(request: Request, node: Node, body: wire.EventBody) -> Response:
    """Publish one event of a type a worker publishes (403 for any other)."""
    if body.type not in wire.WORKER_EVENTS:
        raise Forbidden(f"workers publish only {', '.join(sorted(wire.WORKER_EVENTS))}; not {body.type}")
    return _json({"id": _bus(_zl(request), node).publish(body.type, body.payload, dedup_key=body.dedup_key)})


# --- artifacts ---------------------------------------------------------------------------


@router.put("/{node}/artifacts/{sha256}")
async def upload(
    request: Request,
    node: Node,
    sha256: str,
    kind: ArtifactKind,
    config_key: Annotated[str | None, Query(max_length=200)] = None,
    producer_job_id: int | None = None,
    meta: Annotated[str | None, Header(alias=wire.META_HEADER)] = None,
) -> dict[str, Any]:
    """Store an artifact streamed in the body; refused (422, nothing stored) when its bytes miss `sha256`."""
    app = _zl(request)
    check_sha256(sha256)
    try:
        extra = json.loads(meta) if meta else {}
    except ValueError:
        raise wire.BadRequest(f"{wire.META_HEADER} is not JSON") from None
    if not isinstance(extra, dict):
        raise wire.BadRequest(f"{wire.META_HEADER} must be a JSON object")
    limit = app.settings.server.max_artifact_bytes
    folder = app.settings.data_dir / "server" / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    temp = folder / f"{sha256}.{uuid.uuid4().hex}.part"
    try:
        digest, size = hashlib.sha256(), 0
        with temp.open("wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise wire.TooLarge(f"artifact is larger than {limit} bytes (server.max_artifact_bytes)")
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            raise ArtifactError(
                f"uploaded bytes hash to {digest.hexdigest()}, not {sha256}: nothing stored; upload it again"
            )
        artifact = await run_in_threadpool(
            app.artifacts.put, temp, kind, config_key=config_key, meta=extra, producer_job_id=producer_job_id
        )
    finally:
        temp.unlink(missing_ok=True)
    return {"sha256": artifact.sha256, "kind": artifact.kind.value, "size_bytes": artifact.size_bytes}


@router.get("/{node}/artifacts/{sha256}")
def download(request: Request, node: Node, sha256: str) -> FileResponse:
    """Stream a verified copy of an artifact; its sha256 rides in a header for the worker to check again."""
    app = _zl(request)
    check_sha256(sha256)
    with app.store.read() as conn:
        known = artifact_queries.get_artifact(conn, sha256) is not None
    if not known:
        raise wire.NotFound(f"artifact {sha256} is not in the manifest")
    path: Path = app.artifacts.fetch(sha256)
    return FileResponse(path, media_type="application/octet-stream", headers={wire.SHA256_HEADER: sha256})
