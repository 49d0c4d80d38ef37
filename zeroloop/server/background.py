"""Serve the dashboard from inside another command (the quickstart), on a loopback port, in a thread.

The server listens on 127.0.0.1 only: the configured `server.port` when it is free, else
the port the last run over the same data directory took, else any free port the system
gives. It shares the command's App (the store is safe to use
from several threads) and stops when the block ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
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


PORT_FILE = "dashboard.port"  # in the data directory: the port taken when the configured one was not free


def loopback_socket(preferred_port: int, *fallbacks: int) -> socket.socket:
    """A socket bound to 127.0.0.1: on `preferred_port` when it is free, else on the first free port
    of `fallbacks`, else on any free port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    for port in (preferred_port, *fallbacks):
        try:
            sock.bind(("127.0.0.1", port))
            return sock
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                sock.close()
                raise
    sock.bind(("127.0.0.1", 0))
    return sock


def _remembered(path: Path) -> tuple[int, ...]:
    try:
        port = int(path.read_text().strip())
    except (OSError, ValueError):
        return ()
    return (port,) if 0 < port < 65536 else ()


@contextmanager
def serving(app: App) -> Iterator[str]:
    """Serve `app`'s dashboard on loopback while the block runs; yield its address (http://127.0.0.1:PORT).

    On `server.port` when it is free, else on the port a previous run over the same data directory
    took (`dashboard.port` there), so a bookmark survives restarts, else on a free port (remembered).
    This machine stays trusted whatever tokens exist (`create_api`'s `trust_machine`): a token made for
    a remote viewer or a worker while the quickstart runs does not lock the quickstart out of its pages."""
    remembered = app.settings.data_dir / PORT_FILE
    before = _remembered(remembered)
    sock = loopback_socket(app.settings.server.port, *before)
    port = sock.getsockname()[1]
    if port != app.settings.server.port and before != (port,):
        with contextlib.suppress(OSError):  # a read-only data directory costs only the bookmark
            remembered.parent.mkdir(parents=True, exist_ok=True)
            temp = remembered.with_suffix(".tmp")
            temp.write_text(f"{port}\n")
            temp.replace(remembered)
    with in_thread(app, sock, trust_machine=True) as url:
        yield url


@contextmanager
def in_thread(
    app: App,
    sock: socket.socket,
    *,
    loopback: bool = True,
    trust_machine: bool = False,
    options: Mapping[str, Any] | None = None,
) -> Iterator[str]:
    """Serve `app` on `sock` (bound to 127.0.0.1) in a thread while the block runs; yield its address.

    `loopback`: whether the server may trust tokenless requests while the store holds no token;
    `trust_machine`: whatever tokens it holds (the quickstart's own server);
    `options`: more of uvicorn's (TLS: the address is then https://).
    """
    port = sock.getsockname()[1]
    extra = dict(options or {})
    config = uvicorn.Config(
        create_api(app, loopback=loopback, trust_machine=trust_machine),
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
