"""Starting `zeroloop serve`: refuse an open address without tokens, then run uvicorn over one App.

With `server.processes` above 1, a supervisor of our own runs that many server processes
on one socket; each builds its App from the same settings (the environment and the
settings file, which the processes inherit), so they differ in nothing but their PID.

Why not uvicorn's own supervisor: it pings every child every half second and kills one
that does not answer within 5 s, so on a CPU-starved machine children still importing
were replaced forever, and it took more than 30 s to honour SIGTERM. This one waits for
a child as long as it lives, says at WARNING what it is waiting for, restarts a child
that exits (with backoff), and on SIGTERM or SIGINT stops them all within
`STOP_GRACE_S`, killing what is still running then.
"""

from __future__ import annotations

import ipaddress
import logging
import multiprocessing
import os
import signal
import socket
import ssl
import threading
import time
from multiprocessing.process import BaseProcess
from queue import Empty
from typing import Any

import uvicorn

from zeroloop.app import App
from zeroloop.config import Settings, load_settings
from zeroloop.control.tokens import Tokens
from zeroloop.errors import ConfigError
from zeroloop.server.api import ASGIApp, create_api

log = logging.getLogger(__name__)

GRACEFUL_S = 10  # a server process finishes the requests in flight within this (seconds)
STOP_GRACE_S = GRACEFUL_S + 5  # then the supervisor kills what still runs (seconds)
WAITING_REPORT_S = 10.0  # how often the supervisor says what it still waits for (seconds)
RESTART_INITIAL_S, RESTART_MAX_S = 1.0, 30.0  # backoff of a server process that keeps exiting (seconds)
_STARTUP_FAILURE = 3  # uvicorn's exit code for a server that could not start (a bad app, TLS file, ...)


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address (or `localhost`): only this machine can reach it."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def check_bind(host: str, tokens: Tokens) -> None:
    """Refuse to listen off loopback while the store holds no usable token (anyone could then act as a worker)."""
    if not is_loopback(host) and not tokens.any_usable():
        raise ConfigError(
            f"refusing to serve on {host}: the store holds no usable token, so nothing could authenticate; "
            "create one with `zeroloop tokens create --role worker --node NODE` first, or bind 127.0.0.1"
        )


def uvicorn_options(settings: Settings, host: str, port: int) -> dict[str, Any]:
    """uvicorn's options for these settings: address, TLS (client certificates when asked), forwarded headers."""
    server = settings.server
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "ssl_certfile": str(server.tls_certfile) if server.tls_certfile else None,
        "ssl_keyfile": str(server.tls_keyfile) if server.tls_keyfile else None,
        "log_level": settings.log_level.lower(),
        "server_header": False,
        "timeout_graceful_shutdown": GRACEFUL_S,
        # X-Forwarded-For and -Proto are believed only from the proxies named (none by default).
        "proxy_headers": server.forwarded_allow_ips is not None,
        "forwarded_allow_ips": server.forwarded_allow_ips or "",
    }
    if server.tls_client_ca is not None:  # mutual TLS: a worker without a certificate the CA signed is refused
        options["ssl_ca_certs"] = str(server.tls_client_ca)
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return options


def serve(app: App, *, host: str, port: int, processes: int | None = None) -> None:
    """Run the server on host:port until interrupted (HTTPS when server.tls_certfile is set).

    `processes` (default server.processes) server processes share the port.
    """
    check_bind(host, Tokens(app.store))
    server = app.settings.server
    count = processes or server.processes
    options = uvicorn_options(app.settings, host, port)
    scheme = "https" if server.tls_certfile else "http"
    log.info("zeroloop serve listening on %s://%s:%d (%d process(es))", scheme, host, port, count)
    if count == 1:
        uvicorn.Server(uvicorn.Config(create_api(app, loopback=is_loopback(host)), **options)).run()
        return
    os.environ["ZEROLOOP_SERVER__HOST"] = host  # what each process needs to know whether it is on loopback
    config = uvicorn.Config(f"{__name__}:api_from_environment", factory=True, **options)
    Supervisor(config, count, f"{scheme}://{host}:{port}").run()


def api_from_environment() -> ASGIApp:
    """The server of one process of a multi-process `zeroloop serve`, from the inherited settings."""
    settings = load_settings()
    logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
    return create_api(App(settings), loopback=is_loopback(settings.server.host))


class _Server(uvicorn.Server):
    """A uvicorn server that tells its supervisor once it is serving."""

    def __init__(self, config: uvicorn.Config, ready: Any) -> None:
        super().__init__(config)
        self.ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.ready.put(os.getpid())


def _serve_child(config: uvicorn.Config, sock: socket.socket, ready: Any) -> None:  # runs in a server process
    config.configure_logging()
    _Server(config, ready).run(sockets=[sock])


class Supervisor:
    """Runs `count` server processes on one socket: waits for them however slowly they start, restarts one that
    exits, and stops them all promptly on SIGTERM or SIGINT (its signal handlers only set a flag)."""

    def __init__(self, config: uvicorn.Config, count: int, url: str) -> None:
        self.config = config
        self.count = count
        self.url = url
        self.context = multiprocessing.get_context("spawn")
        self.ready = self.context.Queue()
        self.stopping = threading.Event()
        self.children: list[BaseProcess] = []
        self.serving: set[int] = set()  # pids that said they are serving

    def run(self) -> None:
        """Serve until told to stop."""
        sock = self.config.bind_socket()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda _signum, _frame: self.stopping.set())
        began = time.monotonic()
        log.warning("starting %d server processes on %s", self.count, self.url)
        self.children = [self._start(sock) for _ in range(self.count)]
        restarts: dict[int, tuple[int, float]] = {}  # slot -> (exits in a row, when to start again)
        reported = began
        try:
            while not self.stopping.wait(0.2):
                self._collect_ready(began)
                now = time.monotonic()
                for slot, child in enumerate(self.children):
                    if child.exitcode is None:
                        continue
                    if child.pid not in self.serving and child.exitcode == _STARTUP_FAILURE:
                        raise ConfigError(f"server process {child.pid} could not start (see its error above)")
                    exits, when = restarts.get(slot, (0, 0.0))
                    if when == 0.0:
                        wait = min(RESTART_MAX_S, RESTART_INITIAL_S * 2**exits)
                        log.warning("server process %s exited with code %s; starting another in %.0f s",
                                    child.pid, child.exitcode, wait)  # fmt: skip
                        self.serving.discard(child.pid or 0)
                        restarts[slot] = (exits + 1, now + wait)
                    elif now >= when:
                        self.children[slot] = self._start(sock)
                        restarts[slot] = (exits, 0.0)
                if len(self.serving) < self.count and now - reported >= WAITING_REPORT_S:
                    reported = now
                    said = "%d of %d server processes serving after %.0f s; waiting for the others (a busy machine)"
                    log.warning(said, len(self.serving), self.count, now - began)
        finally:
            self._stop_all()
            sock.close()

    def _start(self, sock: socket.socket) -> BaseProcess:
        child = self.context.Process(target=_serve_child, args=(self.config, sock, self.ready), daemon=False)
        child.start()
        log.info("started server process %s", child.pid)
        return child

    def _collect_ready(self, began: float) -> None:
        while True:
            try:
                pid = self.ready.get_nowait()
            except Empty:
                return
            self.serving.add(pid)
            log.warning("server process %s serving after %.1f s (%d of %d)", pid, time.monotonic() - began,
                        len(self.serving), self.count)  # fmt: skip

    def _stop_all(self) -> None:
        """SIGTERM every server process; kill those still running after STOP_GRACE_S."""
        log.warning("stopping %d server processes", len(self.children))
        for child in self.children:
            if child.exitcode is None and child.pid is not None:
                os.kill(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for child in self.children:
            child.join(timeout=max(0.0, deadline - time.monotonic()))
        for child in self.children:
            if child.exitcode is None:
                log.warning("server process %s did not stop within %d s: killed", child.pid, STOP_GRACE_S)
                child.kill()
                child.join(timeout=5)
        self.ready.close()
