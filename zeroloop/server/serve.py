"""Starting `zeroloop serve`: refuse an open address without tokens, then run uvicorn over one App.

With `server.processes` above 1, uvicorn's own supervisor runs that many server processes
on one socket; each builds its App from the same settings (the environment and the
settings file, which the processes inherit), so they differ in nothing but their PID.
"""

from __future__ import annotations

import ipaddress
import logging
import os

import uvicorn

from zeroloop.app import App
from zeroloop.config import load_settings
from zeroloop.control.tokens import Tokens
from zeroloop.errors import ConfigError
from zeroloop.server.api import ASGIApp, create_api

log = logging.getLogger(__name__)


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


def serve(app: App, *, host: str, port: int, processes: int | None = None) -> None:
    """Run the server on host:port until interrupted (HTTPS when server.tls_certfile is set).

    `processes` (default server.processes) server processes share the port.
    """
    check_bind(host, Tokens(app.store))
    server = app.settings.server
    count = processes or server.processes
    options = {
        "host": host,
        "port": port,
        "ssl_certfile": str(server.tls_certfile) if server.tls_certfile else None,
        "ssl_keyfile": str(server.tls_keyfile) if server.tls_keyfile else None,
        "log_level": app.settings.log_level.lower(),
        "server_header": False,
        "timeout_graceful_shutdown": 10,
    }
    scheme = "https" if server.tls_certfile else "http"
    log.info("zeroloop serve listening on %s://%s:%d (%d process(es))", scheme, host, port, count)
    if count == 1:
        uvicorn.Server(uvicorn.Config(create_api(app, loopback=is_loopback(host)), **options)).run()  # type: ignore[arg-type]
        return
    os.environ["ZEROLOOP_SERVER__HOST"] = host  # what each process needs to know whether it is on loopback
    uvicorn.run(f"{__name__}:api_from_environment", factory=True, workers=count, **options)  # type: ignore[arg-type]


def api_from_environment() -> ASGIApp:
    """The server of one process of a multi-process `zeroloop serve`, from the inherited settings."""
    settings = load_settings()
    logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
    return create_api(App(settings), loopback=is_loopback(settings.server.host))
