"""Benchmark of the HTTP stack under the worker API: the CPU one no-op request costs each end.

A uvicorn server (httptools, uvloop: what `zeroloop serve` runs) answers a worker-sized
POST with a job-sized JSON answer, one request at a time on loopback, in four shapes:

- `plain`: a Starlette route whose work crosses to a thread, where it reads the token header and parses
  the body model (the worker API today);
- `fastapi`: a FastAPI endpoint with a header dependency and a pydantic body (the worker API before);
- `inline`: a bare ASGI function doing the work on the event loop (the floor);
- `thread`: the bare function with the thread hop.

Each is called by the standard library's http.client (the worker's client today) and by
httpx (its client before). Printed: microseconds of CPU per request in the server
process and in this process, and wall time per request.

    .venv/bin/python -m bench.http_stack [--requests 3000] [--rounds 2]
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint's annotations at run time.
import argparse
import asyncio
import contextvars
import http.client
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Annotated, Any

import httpx
import psutil

from zeroloop.remote.wire import CompleteBody

PATH = "/api/v1/worker/w1/jobs/17/complete"
BODY = json.dumps(
    {"token": 5, "result": None, "event": None, "claim": {"capabilities": {"gpus": 0}, "types": ["selfplay"]}}
).encode()
ROW = {"id": 17, "job_type": "selfplay", "config_key": "connect_four_2p", "payload": {"games": 64}, "status": "running",
       "attempts": 1, "lease_node": "w1", "lease_token": 6, "lease_expires_at": 1.7e9, "created_at": 1.7e9}  # fmt: skip
ANSWER = json.dumps({"job": ROW, "lease": ROW}).encode()
SHAPES = ("plain", "fastapi", "inline", "thread")


def work(_body: bytes) -> bytes:
    """The endpoint's work: none, so only the HTTP stack is measured."""
    return ANSWER


async def _in_thread(body: bytes) -> bytes:
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(None, context.run, work, body)


def _bare(hop: bool) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        out = await _in_thread(b"".join(chunks)) if hop else work(b"".join(chunks))
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": out})

    return app


def _plain() -> Any:
    """As zeroloop.server.worker does it: in the thread, read the token header, parse the body model, work."""
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route, Router

    def answer(request: Request, raw: bytes) -> Response:
        authorization = request.headers.get("authorization")
        assert authorization and authorization.startswith("Bearer ")
        int(request.path_params["job_id"])
        body = CompleteBody.model_validate_json(raw)
        return Response(work(body.model_dump_json().encode()), media_type="application/json")

    async def complete(request: Request) -> Response:
        raw = await request.body()
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(None, context.run, answer, request, raw)

    return Router(routes=[Route("/api/v1/worker/{node}/jobs/{job_id}/complete", complete, methods=["POST"])])


def _fastapi() -> Any:
    from fastapi import Depends, FastAPI, Header
    from fastapi.responses import Response

    api = FastAPI()

    def acting(node: str, authorization: Annotated[str | None, Header()] = None) -> str:
        return node

    @api.post("/api/v1/worker/{node}/jobs/{job_id}/complete")
    def complete(node: Annotated[str, Depends(acting)], job_id: int, body: CompleteBody) -> Response:
        return Response(work(body.model_dump_json().encode()), media_type="application/json")

    return api


def serve(shape: str, port: int) -> None:
    """Run the server of one shape (in its own process)."""
    import uvicorn

    apps: dict[str, Callable[[], Any]] = {
        "plain": _plain, "fastapi": _fastapi, "inline": lambda: _bare(False), "thread": lambda: _bare(True),
    }  # fmt: skip
    uvicorn.run(apps[shape](), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _stdlib_caller(port: int) -> Callable[[], None]:
    connection = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Content-Type": "application/json", "Authorization": "Bearer zl_0123456789ab_secret"}

    def call() -> None:
        connection.request("POST", PATH, BODY, headers)
        answer = connection.getresponse()
        content = answer.read()
        if answer.status != 200:
            raise SystemExit(f"the server answered {answer.status}: {content[:200]!r}")
        json.loads(content)

    return call


def _httpx_caller(port: int) -> Callable[[], None]:
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": "Bearer zl_0123456789ab_s"})

    def call() -> None:
        answer = client.post(PATH, content=BODY, headers={"Content-Type": "application/json"})
        if answer.status_code != 200:
            raise SystemExit(f"the server answered {answer.status_code}: {answer.text[:200]!r}")
        answer.json()

    return call


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def measure(shape: str, client: str, requests: int) -> tuple[float, float, float]:
    """Server CPU, client CPU and wall time per request (microseconds) for one shape and client."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "bench.http_stack", "--serve", shape, "--port", str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:  # a benchmark, not a test: poll until the server accepts
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"the {shape} server did not start") from None
                time.sleep(0.1)
        call = _stdlib_caller(port) if client == "http.client" else _httpx_caller(port)
        for _ in range(200):
            call()
        them, me = psutil.Process(server.pid), psutil.Process()
        server_cpu, client_cpu, began = _cpu(them), _cpu(me), time.perf_counter()
        for _ in range(requests):
            call()
        wall = time.perf_counter() - began
        scale = 1e6 / requests
        return (_cpu(them) - server_cpu) * scale, (_cpu(me) - client_cpu) * scale, wall * scale
    finally:
        server.terminate()
        server.wait(timeout=30)


def _range(values: list[float]) -> str:
    low, high = min(values), max(values)
    return f"{low:.0f}" if len(values) == 1 else f"{low:.0f}-{high:.0f}"


def main() -> None:
    """Measure every shape with both clients, the pairs interleaved in each round."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--serve", choices=SHAPES, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    pairs = [(shape, client) for client in ("http.client", "httpx") for shape in SHAPES]
    figures: dict[tuple[str, str], list[tuple[float, float, float]]] = {pair: [] for pair in pairs}
    for _ in range(args.rounds):
        for pair in pairs:
            figures[pair].append(measure(*pair, args.requests))
    print(f"\n{args.requests} requests per run, {args.rounds} rounds; microseconds per request")
    for (shape, client), rows in figures.items():
        server, caller, wall = ([row[i] for row in rows] for i in range(3))
        print(f"  {shape:8} {client:12} server CPU {_range(server):>9}  client CPU {_range(caller):>9}  "
              f"wall {_range(wall):>9}")  # fmt: skip


if __name__ == "__main__":
    main()
