"""The worker API: everything a worker does through the store, as HTTP under /api/v1/worker/{node}/.

Every endpoint names the node it acts for; a worker token may act only as its own node
(`Principal.may_act_as`). Job operations present the same fencing tokens as over the
store, and the server also refuses a token presented by a node that does not hold the
lease. Events a worker publishes and the rows it writes carry its node, as they would
over a direct connection.

These are the server's hot requests, so they are plain Starlette routes rather than
FastAPI's: each request crosses to a worker thread once, and there checks its token,
parses its body with the pydantic model it names, does its store work and serialises
its answer (docs/server.md, "Cost"). An endpoint is one function with `@_endpoint`.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route, Router

from zeroloop.app import App
from zeroloop.artifacts.cache import check_sha256
from zeroloop.artifacts.transfer import ArtifactKind
from zeroloop.cluster.nodes import NodeInfo, Nodes, NodeStatus
from zeroloop.control.tokens import Tokens
from zeroloop.errors import ArtifactError, Forbidden, QueueError, ZeroloopError
from zeroloop.events.bus import EventBus
from zeroloop.pipeline.registry import ModelRegistry
from zeroloop.queue.jobs import Job, Outcome
from zeroloop.queue.manager import JobQueue
from zeroloop.remote import wire
from zeroloop.store.queries import artifacts as artifact_queries
from zeroloop.store.queries import daemons as daemon_queries
from zeroloop.store.queries import pipelines as pipeline_queries

log = logging.getLogger(__name__)
T = TypeVar("T")
_UPLOAD = re.compile(rf"^{wire.API}/[^/]+/artifacts/[^/]+$")


def is_upload(method: str, path: str) -> bool:
    """Whether a request is an artifact upload (streamed, with its own size limit)."""
    return method == "PUT" and _UPLOAD.match(path) is not None


# Threads for the requests' store work, and apart from them for artifact transfers (an upload's store
# put, a download the server fetches first), so a few large transfers never hold up lease heartbeats.
REQUEST_THREADS = 32
TRANSFER_THREADS = 8


@dataclass(frozen=True)
class Served:
    """What every worker request is answered from: the App, the token checker, whether on loopback,
    and the thread pools its blocking work runs in."""

    app: App
    tokens: Tokens
    loopback: bool
    requests: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(REQUEST_THREADS, thread_name_prefix="zeroloop-api")
    )
    transfers: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(TRANSFER_THREADS, thread_name_prefix="zeroloop-transfer")
    )

    def acting_node(self, request: Request) -> str:
        """The node a request acts for, once its token may act as that node (AuthError/Forbidden otherwise)."""
        node = request.path_params["node"]
        authorization = request.headers.get("authorization")
        presented = authorization.removeprefix("Bearer ").strip() if authorization else None
        self.tokens.principal(presented, loopback=self.loopback).may_act_as(node)
        return str(node)


# An endpoint: (served, node, body or None, **path parameters) -> a JSON-able dict or a Response.
Handler = Callable[..., Any]


@dataclass(frozen=True)
class _Declared:
    method: str
    path: str
    handler: Handler
    body: type[BaseModel] | None
    transfer: bool  # runs in the transfer pool; the handler also receives the query string as `query`


_ROUTES: list[_Declared] = []


def _endpoint(
    method: str, path: str, body: type[BaseModel] | None = None, *, transfer: bool = False
) -> Callable[[Handler], Handler]:
    """Declare `handler` the endpoint of `method path` (under /api/v1/worker), its JSON body read as `body`;
    `transfer`: it moves artifact bytes (its own thread pool; it is given the query string too)."""

    def declare(handler: Handler) -> Handler:
        _ROUTES.append(_Declared(method, path, handler, body, transfer))
        return handler

    return declare


Endpoint = Callable[[Request], Awaitable[Response]]
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]  # each path answers them all itself


def router(served: Served) -> Router:
    """The worker API's routes, answering from `served`; any other path under it is a JSON 404, and any
    other method on one of its paths a JSON 405."""
    by_path: dict[str, dict[str, Endpoint]] = {}
    for declared in _ROUTES:
        by_path.setdefault(declared.path, {})[declared.method] = _route(served, declared)
    by_path.setdefault("/{node}/artifacts/{sha256}", {})["PUT"] = _upload_endpoint(served)
    routes = [Route(f"{wire.API}{path}", _by_method(methods), methods=_METHODS) for path, methods in by_path.items()]
    return Router(routes=routes, default=_not_found)


def _by_method(endpoints: dict[str, Endpoint]) -> Endpoint:
    allowed = ", ".join(sorted(endpoints))

    async def endpoint(request: Request) -> Response:
        chosen = endpoints.get(request.method)
        if chosen is None:
            refused = error_response(wire.MethodNotAllowed(f"{request.method} is not one of {allowed} here"))
            refused.headers["Allow"] = allowed
            return refused
        return await chosen(request)

    return endpoint


def _route(served: Served, declared: _Declared) -> Endpoint:
    handler, model = declared.handler, declared.body
    pool = served.transfers if declared.transfer else served.requests

    def answer(request: Request, raw: bytes) -> Response:
        try:
            node = served.acting_node(request)
            params = dict(request.path_params)
            del params["node"]
            if "job_id" in params:
                params["job_id"] = _job_id(params["job_id"])
            if declared.transfer:
                params["query"] = dict(request.query_params)
            body = _parse(model, raw) if model is not None else None
            result = handler(served, node, body, **params)
            return result if isinstance(result, Response) else _json(result)
        except ZeroloopError as exc:
            return error_response(exc)
        except Exception as exc:  # noqa: BLE001  (the request's boundary: logged whole by _internal)
            return _internal(declared.method, declared.path, exc)

    async def endpoint(request: Request) -> Response:
        try:
            raw = await request.body()
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is left to read it
        return await _in_thread(pool, answer, request, raw)

    return endpoint


def _internal(method: str, path: str, exc: Exception) -> Response:
    """The boundary: any failure that is no zeroloop error is logged whole and answered as a bare 500."""
    log.error("internal error in %s %s: %s: %s", method, path, type(exc).__name__, exc, exc_info=exc)
    return Response(_dumps(wire.INTERNAL_ERROR), status_code=500, media_type="application/json")


async def _in_thread(pool: ThreadPoolExecutor, function: Callable[..., T], *args: Any) -> T:
    """Run blocking work (the store) in `pool`, in this request's context (its trace)."""
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(pool, context.run, function, *args)


def _parse(model: type[BaseModel], raw: bytes) -> BaseModel:
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise wire.invalid(exc.errors(), "body") from None


_MAX_ID = 2**63 - 1  # the store's BIGINT


def _job_id(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise wire.BadRequest(f"invalid request: job id {text[:40]!r} is not a number") from None
    if not 0 < number <= _MAX_ID:
        raise wire.BadRequest(f"invalid request: job id {text[:40]} is out of range")
    return number


def error_response(exc: Exception) -> Response:
    """The JSON answer carrying a zeroloop error, with the status `wire.status_of` gives it."""
    status = wire.status_of(exc)
    if status >= 500:
        log.warning("request failed: %s", exc)
    return Response(_dumps(wire.error_body(exc)), status_code=status, media_type="application/json")


async def _not_found(scope: Any, receive: Any, send: Any) -> None:
    method, path = scope.get("method"), scope.get("path")
    await error_response(wire.NotFound(f"no worker endpoint {method} {path}"))(scope, receive, send)


def _dumps(content: Any) -> bytes:
    return json.dumps(content, separators=(",", ":")).encode()


def _json(content: dict[str, Any]) -> Response:
    """A JSON answer, serialised once: worker answers are plain JSON values already."""
    return Response(_dumps(content), media_type="application/json")


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


def _job(job: Job) -> dict[str, Any]:
    return wire.job_to_wire(job)


# --- settings and models -----------------------------------------------------------------


@_endpoint("GET", "/{node}/settings")
def worker_settings(served: Served, node: str, _body: None) -> dict[str, Any]:
    """The settings a worker must share with the cluster: workload and queue (never a URL or a secret)."""
    settings = served.app.settings
    return {"workload": settings.workload.model_dump(mode="json"), "queue": settings.queue.model_dump(mode="json")}


@_endpoint("GET", "/{node}/models/production")
def production_models(served: Served, node: str, _body: None) -> dict[str, Any]:
    """The production model's artifact of every pipeline that has one: {config_key: sha256}."""
    app = served.app
    registry = ModelRegistry(app.store, _bus(app, node))
    with app.store.read() as conn:
        keys = [state["config_key"] for state in pipeline_queries.list_pipelines(conn)]
    found = {key: registry.production(key) for key in keys}
    return {"models": {key: model.artifact_sha256 for key, model in found.items() if model is not None}}


@_endpoint("GET", "/{node}/models/{config_key}/production")
def production_model(served: Served, node: str, _body: None, config_key: str) -> dict[str, Any]:
    """The production model's artifact of a config key, or null before the first promotion."""
    model = ModelRegistry(served.app.store, _bus(served.app, node)).production(config_key)
    return {"artifact_sha256": model.artifact_sha256 if model else None}


# --- nodes -------------------------------------------------------------------------------


@_endpoint("POST", "/{node}/register", wire.RegisterBody)
def register(served: Served, node: str, body: wire.RegisterBody) -> dict[str, Any]:
    """Register (or re-register) the node as active."""
    try:
        info = NodeInfo(**body.info)
    except TypeError as exc:
        raise wire.BadRequest(f"info is not a node description: {exc}") from None
    if info.id != node:
        raise Forbidden(f"node {node!r} cannot register as {info.id!r}")
    Nodes(served.app.store, _bus(served.app, node)).register(info, body.utilisation)
    return {"registered": node}


@_endpoint("POST", "/{node}/heartbeat", wire.HeartbeatBody)
def heartbeat(served: Served, node: str, body: wire.HeartbeatBody) -> dict[str, Any]:
    """Record the node's load; answer its status (null: unknown, register first)."""
    status: NodeStatus | None = Nodes(served.app.store, _bus(served.app, node)).heartbeat(node, body.utilisation)
    return {"status": status.value if status else None}


@_endpoint("POST", "/{node}/leave")
def leave(served: Served, node: str, _body: None) -> dict[str, Any]:
    """Mark a cleanly stopped node terminated."""
    return {"left": Nodes(served.app.store, _bus(served.app, node)).leave(node)}


@_endpoint("POST", "/{node}/daemons", wire.DaemonsBody)
def daemons(served: Served, node: str, body: wire.DaemonsBody) -> dict[str, Any]:
    """Write the node's daemon records and publish the crash loops it detected, in one transaction."""
    if any(row.node != node for row in body.rows):
        raise Forbidden(f"node {node!r} may write only its own daemon records")
    bus = _bus(served.app, node)
    with served.app.store.transaction() as conn:
        for row in body.rows:
            daemon_queries.upsert_daemon(conn, row.model_dump())
        for payload in body.crash_loops:
            bus.publish("DAEMON_CRASH_LOOP", payload)
    return {"written": len(body.rows)}


# --- jobs --------------------------------------------------------------------------------


@_endpoint("POST", "/{node}/jobs/claim", wire.ClaimBody)
def claim(served: Served, node: str, body: wire.ClaimBody) -> dict[str, Any]:
    """Lease the next job this node may run; `lease` is null when there is none."""
    lease = _queue(served.app, node).claim(node, body.capabilities, body.types)
    return {"lease": wire.lease_to_wire(lease)}


@_endpoint("POST", "/{node}/jobs/{job_id}/heartbeat", wire.TokenBody)
def extend(served: Served, node: str, body: wire.TokenBody, job_id: int) -> dict[str, Any]:
    """Extend the lease held under `token`; 409 when it is no longer current."""
    queue = _queue(served.app, node)
    _held(queue, node, job_id, body.token)
    return {"expires_at": queue.heartbeat(job_id, body.token)}


@_endpoint("POST", "/{node}/jobs/{job_id}/complete", wire.CompleteBody)
def complete(served: Served, node: str, body: wire.CompleteBody, job_id: int) -> dict[str, Any]:
    """Complete the attempt with its outcome event; with `claim`, lease the next job in the same transaction.

    The hot path: the lease's node is checked inside the completing transaction, and the
    job is read again only to explain a refusal (404 for an unknown id, 403 for another
    node's current lease, else the queue's own 409).
    """
    queue = _queue(served.app, node)
    event = _outcome(body.event)
    try:
        if body.claim is None:
            done = queue.complete(job_id, body.token, body.result, event=event, acting=node)
            return {"job": _job(done), "lease": None}
        done, lease = queue.complete_and_claim(
            job_id, body.token, body.result, node=node, capabilities=body.claim.capabilities, types=body.claim.types,
            event=event, acting=node,
        )  # fmt: skip
    except QueueError:
        _held(queue, node, job_id, body.token)
        raise
    return {"job": _job(done), "lease": wire.lease_to_wire(lease)}


@_endpoint("POST", "/{node}/jobs/{job_id}/fail", wire.FailBody)
def fail(served: Served, node: str, body: wire.FailBody, job_id: int) -> dict[str, Any]:
    """Record a failed attempt: re-queued after a backoff, or dead."""
    queue = _queue(served.app, node)
    _held(queue, node, job_id, body.token)
    return {"job": _job(queue.fail(job_id, body.token, body.error, retryable=body.retryable))}


@_endpoint("POST", "/{node}/jobs/{job_id}/release", wire.ReleaseBody)
def release(served: Served, node: str, body: wire.ReleaseBody, job_id: int) -> dict[str, Any]:
    """Give back an unfinished attempt (the worker is draining): queued again at once, uncounted."""
    queue = _queue(served.app, node)
    _held(queue, node, job_id, body.token)
    return {"job": _job(queue.release(job_id, body.token, body.reason))}


# --- events ------------------------------------------------------------------------------


@_endpoint("POST", "/{node}/events", wire.EventBody)
def publish(served: Served, node: str, body: wire.EventBody) -> dict[str, Any]:
    """Publish one event of a type a worker publishes (403 for any other)."""
    if body.type not in wire.WORKER_EVENTS:
        raise Forbidden(f"workers publish only {', '.join(sorted(wire.WORKER_EVENTS))}; not {body.type}")
    return {"id": _bus(served.app, node).publish(body.type, body.payload, dedup_key=body.dedup_key)}


# --- artifacts ---------------------------------------------------------------------------


@_endpoint("GET", "/{node}/artifacts/{sha256}", transfer=True)
def download(served: Served, node: str, _body: None, sha256: str, query: dict[str, str]) -> Response:
    """Stream a verified copy of an artifact, or redirect (307) to a signed URL of the object store holding it
    (`server.presigned_url_s`, unless `?stream=1`); its sha256 rides in a header either way, and the worker
    checks the bytes. Streaming goes through `Artifacts.fetch`, which verifies and quarantines bad copies."""
    app = served.app
    check_sha256(sha256)
    with app.store.read() as conn:
        known = artifact_queries.get_artifact(conn, sha256) is not None
    if not known:
        raise wire.NotFound(f"artifact {sha256} is not in the manifest")
    lifetime = app.settings.server.presigned_url_s
    wanted = lifetime > 0 and query.get("stream") != "1"  # ?stream=1: a signed copy did not hash right
    signed = app.artifacts.signed_url(sha256, lifetime) if wanted else None
    if signed is not None:  # the object store serves the bytes; the worker still checks them
        return Response(status_code=307, headers={"Location": signed, wire.SHA256_HEADER: sha256})
    path: Path = app.artifacts.fetch(sha256)
    return FileResponse(path, media_type="application/octet-stream", headers={wire.SHA256_HEADER: sha256})


class UploadQuery(BaseModel):
    """The query string of an upload."""

    kind: ArtifactKind
    config_key: str | None = Field(default=None, max_length=200)
    producer_job_id: int | None = None


def _upload_endpoint(served: Served) -> Endpoint:
    """PUT /{node}/artifacts/{sha256}: store an artifact streamed in the body; refused (422, nothing
    stored) when its bytes miss `sha256`. The body is read here, on the event loop, as it arrives."""

    async def upload(request: Request) -> Response:
        try:
            await _in_thread(served.requests, served.acting_node, request)
            return await _upload(served, request)
        except ZeroloopError as exc:
            return error_response(exc)
        except ClientDisconnect:
            log.info("an upload to %s ended early: the worker went away; nothing stored", request.url.path)
            return Response(status_code=400)  # nobody is left to read it
        except Exception as exc:  # noqa: BLE001  (the request's boundary: logged whole by _internal)
            return _internal("PUT", "/{node}/artifacts/{sha256}", exc)

    return upload


async def _upload(served: Served, request: Request) -> Response:
    app = served.app
    sha256 = request.path_params["sha256"]
    check_sha256(sha256)
    try:
        query = UploadQuery.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise wire.invalid(exc.errors(), "query") from None
    meta = request.headers.get(wire.META_HEADER)
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
        artifact = await _in_thread(
            served.transfers,
            lambda: app.artifacts.put(
                temp, query.kind, config_key=query.config_key, meta=extra, producer_job_id=query.producer_job_id
            ),
        )
    finally:
        temp.unlink(missing_ok=True)
    return _json({"sha256": artifact.sha256, "kind": artifact.kind.value, "size_bytes": artifact.size_bytes})
