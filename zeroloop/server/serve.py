"""Starting `zeroloop serve`: refuse an open address without tokens, then run uvicorn over one App."""

from __future__ import annotations

import ipaddress
import logging

import uvicorn

from zeroloop.app import App
from zeroloop.errors import ConfigError
from zeroloop.server.api import create_api
from zeroloop.server.tokens import Tokens

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


def serve(app: App, *, host: str, port: int) -> None:
    """Run the server on host:port until interrupted (HTTPS when server.tls_certfile is set)."""
    check_bind(host, Tokens(app.store))
    server = app.settings.server
    config = uvicorn.Config(
        create_api(app, loopback=is_loopback(host)),
        host=host,
        port=port,
        ssl_certfile=str(server.tls_certfile) if server.tls_certfile else None,
        ssl_keyfile=str(server.tls_keyfile) if server.tls_keyfile else None,
        log_level=app.settings.log_level.lower(),
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    scheme = "https" if server.tls_certfile else "http"
    log.info("zeroloop serve listening on %s://%s:%d", scheme, host, port)
    uvicorn.Server(config).run()
