"""Serve the dashboard from inside another command (the quickstart), on a loopback port, in a thread.

The server listens on 127.0.0.1 only: the configured `server.port` when it is free, else
any free port the system gives. It shares the command's App (the store is safe to use
from several threads) and stops when the block ends.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import uvicorn

from zeroloop.app import App
from zeroloop.errors import ZeroloopError
from zeroloop.server.api import create_api

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


class _Server(uvicorn.Server):
    """A uvicorn server that says when it is listening."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.listening.set()


def loopback_socket(preferred_port: int) -> socket.socket:
    """A socket bound to 127.0.0.1: on `preferred_port` when it is free, else on a free port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", preferred_port))
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            sock.close()
            raise
        sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def serving(app: App) -> Iterator[str]:
    """Serve `app`'s dashboard on loopback while the block runs; yield its address (http://127.0.0.1:PORT)."""
    with in_thread(app, loopback_socket(app.settings.server.port)) as url:
        yield url


@contextmanager
def in_thread(
    app: App, sock: socket.socket, *, loopback: bool = True, options: Mapping[str, Any] | None = None
) -> Iterator[str]:
    """Serve `app` on `sock` (bound to 127.0.0.1) in a thread while the block runs; yield its address.

    `loopback`: whether the server may trust tokenless requests while the store holds no token;
    `options`: more of uvicorn's (TLS: the address is then https://).
    """
    port = sock.getsockname()[1]
    extra = dict(options or {})
    config = uvicorn.Config(
        create_api(app, loopback=loopback),
        **{"log_level": "warning", "lifespan": "off", "server_header": False, **extra},
    )
    server = _Server(config)
    thread = threading.Thread(
        target=lambda: asyncio.run(server.serve(sockets=[sock])), name="zeroloop-server", daemon=True
    )
    thread.start()
    try:
        if not server.listening.wait(timeout=START_TIMEOUT_S):
            raise ZeroloopError(f"the server did not start within {START_TIMEOUT_S:g} s on 127.0.0.1:{port}")
        yield f"{'https' if extra.get('ssl_certfile') else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=STOP_TIMEOUT_S)
        sock.close()
