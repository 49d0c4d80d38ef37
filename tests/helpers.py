"""Test helpers shared across parts: a fake clock, an App over a store URL, running async tests, a loopback
HTTP server."""

from __future__ import annotations

import asyncio
import functools
import ssl
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from zeroloop.app import App
from zeroloop.config import Settings, StoreSettings


class FakeClock:
    """A clock (epoch seconds) that moves only when told; `sleep` advances it and yields once."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def make_app(store_url: str, tmp_path: Path, **overrides: object) -> App:
    """An App on `store_url` with a private data directory (the schema must already be current)."""
    settings = Settings(data_dir=tmp_path / "data", store=StoreSettings(url=store_url), **overrides)  # type: ignore[arg-type]
    return App(settings, upgrade=False)


def run_async(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test function in a fresh event loop (the project uses no async pytest plugin)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return wrapper


@contextmanager
def serve_http(handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """Serve `handler` on a free loopback port in a thread (HTTPS with `tls`) while the block runs; its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
