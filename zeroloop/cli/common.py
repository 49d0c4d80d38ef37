"""What every command shares: the consoles, loading settings, opening the App."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager

import typer
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
    return loaded


@contextmanager
def open_app(*, upgrade: bool | None = None) -> Iterator[App]:
    """Open the App for one command and close it afterwards."""
    with App(settings(), upgrade=upgrade) as app:
        yield app


def finite(value: float) -> float:
    """A typer callback for float options: refuse NaN and infinity, which range checks let through."""
    if not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value
