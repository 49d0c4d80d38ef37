"""What every command shares: the consoles, loading settings, opening the App."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

from rich.console import Console
from rich.logging import RichHandler

from zeroloop.app import App
from zeroloop.config import Settings, load_settings

console = Console()
err_console = Console(stderr=True)


def settings() -> Settings:
    """Load and validate the settings; a ConfigError reaches `main` and is printed as one line."""
    loaded = load_settings()
    logging.basicConfig(
        level=loaded.log_level,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False)],
        force=True,
    )
    # Alembic narrates every migration context at INFO; zeroloop reports upgrades itself.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLevelName(loaded.log_level)))
    # httpx narrates every request of a worker at INFO; its failures reach zeroloop's own warnings.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLevelName(loaded.log_level)))
    return loaded


@contextmanager
def open_app(*, upgrade: bool | None = None) -> Iterator[App]:
    """Open the App for one command and close it afterwards."""
    with App(settings(), upgrade=upgrade) as app:
        yield app


@contextmanager
def open_worker() -> Iterator[App]:
    """Open a worker's parts: over `zeroloop serve` when server.url is set, else over the store."""
    loaded = settings()
    if loaded.server.url is None:
        with App(loaded) as app:
            yield app
        return
    from zeroloop.remote.app import RemoteApp

    with RemoteApp(loaded) as remote:
        # RemoteApp has the worker-side subset of the App (each part a port of zeroloop.ports),
        # which is all that the worker profiles' daemons touch.
        yield cast(App, remote)
