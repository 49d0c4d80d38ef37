"""`zeroloop db`: inspect and upgrade the store's schema."""

from __future__ import annotations

import typer

from zeroloop.cli.common import console, settings
from zeroloop.cli.helptext import examples

app = typer.Typer(
    help="Inspect and upgrade the store's schema.",
    no_args_is_help=True,
    epilog=examples("zeroloop db status", "zeroloop db upgrade"),
)


@app.command("upgrade", epilog=examples("zeroloop db upgrade"))
def upgrade() -> None:
    """Upgrade the store's schema to this version of zeroloop (safe to run while others run)."""
    from zeroloop.store import migrate
    from zeroloop.store.database import Store

    loaded = settings()
    with Store.for_settings(loaded) as store:
        before = migrate.upgrade(store)
        if before.up_to_date:
            console.print(f"{store.display_url}: schema already at {before.head}")
        else:
            console.print(f"{store.display_url}: schema upgraded from {before.current or 'empty'} to {before.head}")


@app.command("status", epilog=examples("zeroloop db status && echo schema is current"))
def status() -> None:
    """Print the store's schema revision and the one this zeroloop needs; exit 1 if they differ."""
    from zeroloop.store import migrate
    from zeroloop.store.database import Store

    loaded = settings()
    with Store.for_settings(loaded) as store:
        state = migrate.status(store)
    console.print(f"{store.display_url}: schema {state.current or 'empty'}, this zeroloop needs {state.head}")
    if not state.up_to_date:
        raise typer.Exit(1)
