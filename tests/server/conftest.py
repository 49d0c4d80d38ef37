"""A real server over an App (uvicorn in a thread, on an ephemeral loopback port) and tokens to call it with."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest
import uvicorn

from zeroloop.app import App
from zeroloop.server.api import create_api
from zeroloop.server.tokens import Role, Tokens


class _Server(uvicorn.Server):
    """A uvicorn server that says when it is listening."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.listening.set()


@contextmanager
def running_server(app: App, *, loopback: bool = False) -> Iterator[str]:
    """Serve `app` in a thread on 127.0.0.1 (an ephemeral port); yield its base URL; stop it afterwards."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = _Server(uvicorn.Config(create_api(app, loopback=loopback), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    try:
        assert server.listening.wait(timeout=30), "the test server did not start within 30 s"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@dataclass
class Served:
    """An HTTP client of a server over `app`, and one token of each kind."""

    app: App
    url: str
    client: httpx.Client
    worker: str  # a worker token for node w1
    viewer: str
    admin: str

    @staticmethod
    def auth(token: str) -> dict[str, str]:
        """The header that presents `token`."""
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def served(app: App) -> Iterator[Served]:
    """A server over the App of the backend under test, treated as bound off loopback (tokens required)."""
    tokens = Tokens(app.store)
    worker, _ = tokens.create(Role.WORKER, node="w1")
    viewer, _ = tokens.create(Role.VIEWER)
    admin, _ = tokens.create(Role.ADMIN)
    with running_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield Served(app, url, client, worker, viewer, admin)
