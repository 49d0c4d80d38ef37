"""A real server over an App (uvicorn in a thread, on an ephemeral loopback port) and tokens to call it with."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from zeroloop.app import App
from zeroloop.cluster.nodes import NodeInfo
from zeroloop.control.tokens import Role, Tokens
from zeroloop.server.background import in_thread


@contextmanager
def running_server(app: App, *, loopback: bool = False, options: dict[str, Any] | None = None) -> Iterator[str]:
    """Serve `app` in a thread on 127.0.0.1 (an ephemeral port); yield its base URL; stop it afterwards.

    `options`: more of uvicorn's (e.g. TLS from `zeroloop.server.serve.uvicorn_options`)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    with in_thread(app, sock, loopback=loopback, options=options) as url:
        yield url


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


def register_node(app: App, node: str) -> None:
    """Register `node` as active, as its agent would at start (a worker behind the server claims only then)."""
    app.nodes.register(NodeInfo(id=node, host="test", provider="manual", cpu_count=1, memory_bytes=1, disk_bytes=1))


@pytest.fixture
def served(app: App) -> Iterator[Served]:
    """A server over the App of the backend under test, treated as bound off loopback (tokens required);
    node w1 is registered."""
    register_node(app, "w1")
    tokens = Tokens(app.store)
    worker, _ = tokens.create(Role.WORKER, node="w1")
    viewer, _ = tokens.create(Role.VIEWER)
    admin, _ = tokens.create(Role.ADMIN)
    with running_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield Served(app, url, client, worker, viewer, admin)
