"""`zeroloop serve`: the HTTP front workers use instead of the store (see docs/server.md)."""

from __future__ import annotations

import typer

from zeroloop.cli.common import open_app
from zeroloop.cli.helptext import examples


def serve_command(
    host: str | None = typer.Option(None, "--host", help="Address to bind (default: server.host, 127.0.0.1)."),
    port: int | None = typer.Option(None, "--port", min=1, max=65535, help="Port to bind (default: server.port)."),
    processes: int | None = typer.Option(
        None, "--processes", min=1, max=64, help="Server processes on the port (default: server.processes)."
    ),
) -> None:
    """Serve the worker API, the dashboard and /metrics over the store; off loopback, tokens are required."""
    from zeroloop.server.serve import serve

    with open_app() as app:
        serve(app, host=host or app.settings.server.host, port=port or app.settings.server.port, processes=processes)


def register(app: typer.Typer) -> None:
    """Add `serve` to the top-level command."""
    epilog = examples("zeroloop serve", "zeroloop serve --host 0.0.0.0 --port 8780 --processes 4")
    app.command("serve", epilog=epilog)(serve_command)
