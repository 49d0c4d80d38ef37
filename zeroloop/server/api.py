"""The FastAPI application of `zeroloop serve`: health endpoints, the worker API, errors, body limits.

The server keeps no state of its own: every request is answered from the one App it
was given (the store, the artifact location), so any number of servers may run side by
side behind a load balancer, and one killed mid-request loses nothing a retry cannot redo.
Errors are mapped to HTTP statuses in one place, `zeroloop.remote.wire.status_of`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from zeroloop import tracing
from zeroloop.app import App
from zeroloop.control.tokens import Tokens
from zeroloop.errors import ZeroloopError
from zeroloop.remote import wire
from zeroloop.server import dashboard, json_api, metrics, worker
from zeroloop.server.gate import Gate
from zeroloop.store import migrate

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """Refuses request bodies over their limit with 413 before the endpoint sees them.

    JSON bodies are small: they are read whole (up to `max_json_bytes`) and replayed. An
    artifact upload is streamed, so its limit is enforced by the endpoint as bytes arrive;
    here only a declared Content-Length over `max_upload_bytes` is refused early.
    """

    def __init__(self, app: ASGIApp, *, max_json_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_json_bytes = max_json_bytes
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, or answer 413."""
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        upload = worker.is_upload(scope["method"], scope["path"])
        limit = self.max_upload_bytes if upload else self.max_json_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        setting = "server.max_artifact_bytes" if upload else "server.max_body_bytes"
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit, setting)
            return
        if upload:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _too_large(send, limit, setting)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class TraceContext:
    """Runs a request that carries a W3C `traceparent` header (a worker inside a traced job) in a span
    continuing it, so what the server writes for that request (events, jobs) stays in the worker's trace.
    Requests without the header start no span."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, inside the caller's trace when it named one."""
        parent = dict(scope.get("headers") or []).get(b"traceparent") if scope["type"] == "http" else None
        if parent is None:
            await self.app(scope, receive, send)
            return
        with tracing.continue_trace(parent.decode("latin-1"), f"{scope['method']} {scope['path']}"):
            await self.app(scope, receive, send)


async def _too_large(send: Send, limit: int, setting: str) -> None:
    body = json.dumps(wire.error_body(wire.TooLarge(f"request body is larger than {limit} bytes ({setting})"))).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Front:
    """Sends the worker API's requests to its own lean router and everything else (health, the
    dashboard, the JSON API, metrics, lifespan) to the FastAPI application."""

    def __init__(self, workers: ASGIApp, rest: ASGIApp) -> None:
        self.workers = workers
        self.rest = rest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Route one ASGI call by its path."""
        if scope["type"] == "http" and scope["path"].startswith(_WORKER_PREFIX):
            await self.workers(scope, receive, send)
        else:
            await self.rest(scope, receive, send)


_WORKER_PREFIX = f"{wire.API}/"


def create_api(app: App, *, loopback: bool = True, trust_machine: bool = False) -> ASGIApp:
    """The server over `app`. `loopback`: it listens on loopback only (requests may then go without a
    token while the store holds none). `trust_machine` (the quickstart's own server, loopback only):
    the dashboard, JSON API and /metrics take tokenless requests whatever tokens exist."""
    server = app.settings.server
    tokens = Tokens(app.store, clock=app.clock, cache_s=server.token_cache_s, negative_cache_s=server.negative_cache_s)
    api = FastAPI(title="zeroloop", docs_url=None, redoc_url=None, openapi_url=None)
    api.state.zl = app
    api.state.tokens = tokens
    api.state.loopback = loopback
    api.state.trust_machine = loopback and trust_machine
    gate = Gate(tokens, server, loopback=loopback)

    @api.exception_handler(ZeroloopError)
    async def zeroloop_error(_request: Request, exc: ZeroloopError) -> JSONResponse:
        status = wire.status_of(exc)
        if status >= 500:
            log.warning("request failed: %s", exc)
        return JSONResponse(wire.error_body(exc), status_code=status)

    @api.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [{key: value for key, value in problem.items() if key in ("loc", "msg")} for problem in exc.errors()]
        return JSONResponse(wire.error_body(wire.invalid(problems)), status_code=400)

    @api.exception_handler(Exception)
    async def internal(_request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error: %s: %s", type(exc).__name__, exc, exc_info=exc)
        return JSONResponse(wire.INTERNAL_ERROR, 500)

    @api.get("/healthz")
    def healthz() -> dict[str, str]:
        """The process is up and answering."""
        return {"status": "ok"}

    @api.get("/readyz")
    def readyz() -> JSONResponse:
        """The store is reachable and its schema is the one this code needs: ready or not, and never why to an
        unauthenticated caller (the reason, which may name the database, goes to the server's log)."""
        try:
            app.store.ping()
            schema = migrate.status(app.store)
        except ZeroloopError as exc:
            log.warning("not ready: %s", exc)
            return JSONResponse({"status": "unready"}, status_code=503)
        if not schema.up_to_date:
            log.warning("not ready: store schema is %s, code needs %s: run `zeroloop db upgrade`", schema.current,
                        schema.head)  # fmt: skip
            return JSONResponse({"status": "unready"}, status_code=503)
        return JSONResponse({"status": "ready"})

    api.state.metrics = metrics.registry_for(app)
    api.include_router(metrics.router)
    api.include_router(json_api.router)
    dashboard.install(api)
    front = Front(worker.router(worker.Served(app, tokens, loopback, gate)), api)
    limited = BodyLimit(front, max_json_bytes=server.max_body_bytes, max_upload_bytes=server.max_artifact_bytes)
    return TraceContext(limited)
