"""The worker API, as HTTP under /api/v1/worker/{node}/: parsing, authentication, and errors; nothing else.

Every endpoint names the node it acts for; a worker token (or the credential it was
exchanged for) may act only as its own node (`Principal.may_act_as`). Each request is
admitted first by the gate (`server.gate`: cheap refusals, limits, whose threads), then
its token is checked, its path, query, headers and body are read through their models in
`zeroloop.remote.wire` (a 400 naming the field, before any store work), and it calls one
operation of `zeroloop.control.workers.WorkerService`, which does and checks the store
work. Errors become statuses in one place, `wire.status_of`.

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
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route, Router

from zeroloop.app import App
from zeroloop.control.tokens import Principal, Tokens
from zeroloop.control.workers import WorkerService
from zeroloop.errors import ArtifactError, ZeroloopError
from zeroloop.remote import wire
from zeroloop.server.gate import Gate

log = logging.getLogger(__name__)
T = TypeVar("T")
_UPLOAD = re.compile(rf"^{wire.API}/[^/]+/artifacts/[^/]+$")


def is_upload(method: str, path: str) -> bool:
    """Whether a request is an artifact upload (streamed, with its own size limit)."""
    return method == "PUT" and _UPLOAD.match(path) is not None


# Threads for artifact transfers (an upload's store put, a download the server fetches first), apart from
# the requests' own, so a few large transfers never hold up lease heartbeats.
TRANSFER_THREADS = 8


@dataclass(frozen=True)
class Served:
    """What every worker request is answered from: the App, the token checker, the gate, the operations."""

    app: App
    tokens: Tokens
    loopback: bool
    gate: Gate
    service: WorkerService = field(init=False)
    transfers: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(TRANSFER_THREADS, thread_name_prefix="zeroloop-transfer")
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "service", WorkerService(self.app, self.tokens))

    def acting(self, request: Request) -> tuple[str, Principal]:
        """The node a request acts for and who it is, once its token may act as that node (AuthError/Forbidden)."""
        node = wire.node_param(request.path_params["node"])
        principal = self.tokens.principal(presented_token(request), loopback=self.loopback)
        principal.may_act_as(node)
        return node, principal


def presented_token(request: Request) -> str | None:
    """The bearer token of a request's Authorization header, or None."""
    authorization = request.headers.get("authorization")
    if not authorization or not authorization.startswith("Bearer "):
        return None
    return authorization.removeprefix("Bearer ").strip() or None


def client_address(request: Request) -> str:
    """The client's address (the proxy's X-Forwarded-For, when server.forwarded_allow_ips trusts the proxy)."""
    return request.client.host if request.client else "unknown"


# An endpoint: (service, principal, node, body or None, **path parameters) -> a JSON-able dict or a Response.
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
    """Declare `handler` the endpoint of `method path` (under /api/v1/worker), its JSON body read as `body`
    (none: the body must be empty or `{}`); `transfer`: it moves artifact bytes (its own thread pool; it is
    given the query string too)."""

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


_PATH_PARAMS: dict[str, Callable[[str], Any]] = {
    "job_id": wire.job_id_param,
    "sha256": wire.sha256_param,
    "config_key": wire.config_key_param,
}


def _route(served: Served, declared: _Declared) -> Endpoint:
    handler, model = declared.handler, declared.body or wire.Empty
    pool = served.transfers if declared.transfer else None

    def answer(request: Request, raw: bytes) -> Response:
        try:
            node, principal = served.acting(request)
            params = {name: _PATH_PARAMS[name](value) for name, value in request.path_params.items() if name != "node"}
            if declared.transfer:
                params["query"] = request.query_params
            body = _parse(model, raw)
            result = handler(served.service, principal, node, body if declared.body else None, **params)
            return result if isinstance(result, Response) else _json(result)
        except ZeroloopError as exc:
            return error_response(exc)
        except Exception as exc:  # noqa: BLE001  (the request's boundary: logged whole by _internal)
            return _internal(declared.method, declared.path, exc)

    async def endpoint(request: Request) -> Response:
        try:
            admitted = await served.gate.admit(client_address(request), presented_token(request))
        except ZeroloopError as exc:
            return error_response(exc)
        try:
            try:
                raw = await request.body()
            except ClientDisconnect:
                return Response(status_code=400)  # nobody is left to read it
            response = await _in_thread(pool or admitted.pool, answer, request, raw)
        finally:
            served.gate.done(admitted)
        if response.status_code in (401, 403):  # on the event loop, where the gate's state lives
            served.gate.failed(client_address(request))
        return response

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
        raise wire.invalid(exc.errors(include_url=False), "body") from None


def error_response(exc: Exception) -> Response:
    """The JSON answer carrying a zeroloop error, with the status `wire.status_of` gives it."""
    status = wire.status_of(exc)
    if status >= 500:
        log.warning("request failed: %s", exc)
    response = Response(_dumps(wire.error_body(exc)), status_code=status, media_type="application/json")
    if status in (429, 503):
        response.headers["Retry-After"] = "1"
    return response


async def _not_found(scope: Any, receive: Any, send: Any) -> None:
    method, path = scope.get("method"), scope.get("path")
    await error_response(wire.NotFound(f"no worker endpoint {method} {str(path)[:200]}"))(scope, receive, send)


def _dumps(content: Any) -> bytes:
    return json.dumps(content, separators=(",", ":")).encode()


def _json(content: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    """A JSON answer, serialised once: worker answers are plain JSON values already."""
    return Response(_dumps(content), media_type="application/json", headers=headers)


# --- settings, models, credentials -------------------------------------------------------------


@_endpoint("GET", "/{node}/settings")
def worker_settings(service: WorkerService, _who: Principal, node: str, _body: None) -> dict[str, Any]:
    """The settings a worker must share with the cluster: workload and queue (never a URL or a secret)."""
    return service.shared_settings()


@_endpoint("GET", "/{node}/models/production")
def production_models(service: WorkerService, _who: Principal, node: str, _body: None) -> dict[str, Any]:
    """The production model's artifact of every pipeline that has one: {config_key: sha256}."""
    return {"models": service.production_models(node)}


@_endpoint("GET", "/{node}/models/{config_key}/production")
def production_model(
    service: WorkerService, _who: Principal, node: str, _body: None, config_key: str
) -> dict[str, Any]:
    """The production model's artifact of a config key, or null before the first promotion."""
    return {"artifact_sha256": service.production_model(node, config_key)}


@_endpoint("POST", "/{node}/credential")
def credential(service: WorkerService, who: Principal, node: str, _body: None) -> dict[str, Any]:
    """Exchange a worker token for a short-lived credential bound to its node (null: keep the token)."""
    issued = service.credential(who)
    return {"credential": issued[0] if issued else None, "expires_at": issued[1] if issued else None}


# --- nodes -------------------------------------------------------------------------------


@_endpoint("POST", "/{node}/register", wire.RegisterBody)
def register(service: WorkerService, _who: Principal, node: str, body: wire.RegisterBody) -> dict[str, Any]:
    """Register (or re-register) the node as active."""
    service.register(node, body)
    return {"registered": node}


@_endpoint("POST", "/{node}/heartbeat", wire.HeartbeatBody)
def heartbeat(service: WorkerService, who: Principal, node: str, body: wire.HeartbeatBody) -> Response:
    """Record the node's load; answer its status (null: unknown, register first), and a fresh credential in
    its headers when the one presented is past half its life."""
    status = service.heartbeat(node, body.utilisation)
    fresh = service.refreshed(who)
    headers = {wire.CREDENTIAL_HEADER: fresh[0], wire.CREDENTIAL_EXPIRES_HEADER: repr(fresh[1])} if fresh else None
    return _json({"status": status.value if status else None}, headers)


@_endpoint("POST", "/{node}/leave")
def leave(service: WorkerService, _who: Principal, node: str, _body: None) -> dict[str, Any]:
    """Mark a cleanly stopped node terminated."""
    return {"left": service.leave(node)}


@_endpoint("POST", "/{node}/daemons", wire.DaemonsBody)
def daemons(service: WorkerService, _who: Principal, node: str, body: wire.DaemonsBody) -> dict[str, Any]:
    """Write the node's daemon records and publish the crash loops it detected, in one transaction."""
    return {"written": service.write_daemons(node, body)}


# --- jobs --------------------------------------------------------------------------------


@_endpoint("POST", "/{node}/jobs/claim", wire.ClaimBody)
def claim(service: WorkerService, _who: Principal, node: str, body: wire.ClaimBody) -> dict[str, Any]:
    """Lease up to `limit` jobs this node may run: `leases`, and the first as `lease` (null when none)."""
    leases = service.claim(node, body.capabilities.capabilities(), body.types, body.limit)
    rows = [wire.lease_to_wire(lease) for lease in leases]
    return {"lease": rows[0] if rows else None, "leases": rows}


@_endpoint("POST", "/{node}/jobs/{job_id}/heartbeat", wire.TokenBody)
def extend(service: WorkerService, _who: Principal, node: str, body: wire.TokenBody, job_id: int) -> dict[str, Any]:
    """Extend the lease held under `token`; 409 when it is no longer current."""
    return {"expires_at": service.extend(node, job_id, body.token)}


@_endpoint("POST", "/{node}/jobs/{job_id}/complete", wire.CompleteBody)
def complete(
    service: WorkerService, _who: Principal, node: str, body: wire.CompleteBody, job_id: int
) -> dict[str, Any]:
    """Complete the attempt with its outcome event; with `claim`, lease more jobs in the same transaction."""
    done, leases = service.complete(node, job_id, body)
    rows = [wire.lease_to_wire(lease) for lease in leases]
    return {"job": wire.job_to_wire(done), "lease": rows[0] if rows else None, "leases": rows}


@_endpoint("POST", "/{node}/jobs/{job_id}/fail", wire.FailBody)
def fail(service: WorkerService, _who: Principal, node: str, body: wire.FailBody, job_id: int) -> dict[str, Any]:
    """Record a failed attempt: re-queued after a backoff, or dead."""
    return {"job": wire.job_to_wire(service.fail(node, job_id, body.token, body.error, retryable=body.retryable))}


@_endpoint("POST", "/{node}/jobs/{job_id}/release", wire.ReleaseBody)
def release(service: WorkerService, _who: Principal, node: str, body: wire.ReleaseBody, job_id: int) -> dict[str, Any]:
    """Give back an unfinished attempt (the worker is draining): queued again at once, uncounted."""
    return {"job": wire.job_to_wire(service.release(node, job_id, body.token, body.reason))}


# --- events ------------------------------------------------------------------------------


@_endpoint("POST", "/{node}/events", wire.EventBody)
def publish(service: WorkerService, _who: Principal, node: str, body: wire.EventBody) -> dict[str, Any]:
    """Publish one event of a type a worker publishes of itself (403 for any other, or another node's)."""
    return {"id": service.publish(node, body)}


# --- artifacts ---------------------------------------------------------------------------


@_endpoint("GET", "/{node}/artifacts/{sha256}", transfer=True)
def download(service: WorkerService, _who: Principal, node: str, _body: None, sha256: str, query: Any) -> Response:
    """Stream a verified copy of an artifact, or redirect (307) to a signed URL of the object store holding it
    (`server.presigned_url_s`, unless `?stream=1`); its sha256 rides in a header either way, and the worker
    checks the bytes. Streaming goes through `Artifacts.fetch`, which verifies and quarantines bad copies."""
    asked = _query(wire.DownloadQuery, query)
    if not service.known_artifact(sha256):
        raise wire.NotFound(f"artifact {sha256} is not in the manifest")
    signed = service.signed_url(sha256) if asked.stream != "1" else None  # 1: a signed copy did not hash right
    if signed is not None:  # the object store serves the bytes; the worker still checks them
        return Response(status_code=307, headers={"Location": signed, wire.SHA256_HEADER: sha256})
    return FileResponse(
        service.fetch(sha256), media_type="application/octet-stream", headers={wire.SHA256_HEADER: sha256}
    )


def _query(model: type[BaseModel], query: Any) -> Any:
    try:
        return model.model_validate(dict(query))
    except ValidationError as exc:
        raise wire.invalid(exc.errors(include_url=False), "query") from None


def _upload_endpoint(served: Served) -> Endpoint:
    """PUT /{node}/artifacts/{sha256}: store the output of a job the node holds, streamed in the body; refused
    (422, nothing stored) when its bytes miss `sha256`. The body is read here, on the event loop, as it arrives."""

    async def upload(request: Request) -> Response:
        address = client_address(request)
        try:
            admitted = await served.gate.admit(address, presented_token(request))
        except ZeroloopError as exc:
            return error_response(exc)
        try:
            checked = await _in_thread(admitted.pool, _checked_upload, served, request)
        except ZeroloopError as exc:
            if wire.status_of(exc) in (401, 403):
                served.gate.failed(address)
            return error_response(exc)
        except Exception as exc:  # noqa: BLE001  (the request's boundary: logged whole by _internal)
            return _internal("PUT", "/{node}/artifacts/{sha256}", exc)
        finally:
            served.gate.done(admitted)
        try:
            return await _upload(served, request, *checked)
        except ZeroloopError as exc:
            return error_response(exc)
        except ClientDisconnect:
            log.info("an upload to %s ended early: the worker went away; nothing stored", request.url.path[:200])
            return Response(status_code=400)  # nobody is left to read it
        except Exception as exc:  # noqa: BLE001  (the request's boundary: logged whole by _internal)
            return _internal("PUT", "/{node}/artifacts/{sha256}", exc)

    return upload


def _checked_upload(served: Served, request: Request) -> tuple[str, str, wire.UploadQuery, dict[str, Any]]:
    """Everything an upload is refused for before its bytes are read: token, node, sha256, query, meta, job."""
    node, _principal = served.acting(request)
    sha256 = wire.sha256_param(request.path_params["sha256"])
    query = _query(wire.UploadQuery, request.query_params)
    meta = wire.meta_header(request.headers.get(wire.META_HEADER))
    served.service.check_upload(node, query)
    return node, sha256, query, meta


async def _upload(
    served: Served, request: Request, node: str, sha256: str, query: wire.UploadQuery, meta: dict[str, Any]
) -> Response:
    settings = served.app.settings
    limit = settings.server.max_artifact_bytes
    folder = settings.data_dir / "server" / "uploads"
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
        if size == 0:
            raise ArtifactError("an artifact holds data: an empty upload is refused, nothing stored")
        artifact = await _in_thread(served.transfers, served.service.store_upload, node, temp, query, meta)
    finally:
        temp.unlink(missing_ok=True)
    return _json({"sha256": artifact.sha256, "kind": artifact.kind.value, "size_bytes": artifact.size_bytes})
