"""`zeroloop tokens`: hand out, list and revoke the API tokens of `zeroloop serve`."""

from __future__ import annotations

import sys
import time
from typing import Literal, get_args

import typer
from rich.markup import escape
from rich.table import Table

from zeroloop.cli.common import console, err_console, open_app
from zeroloop.cli.helptext import examples

# The values of zeroloop.control.tokens.Role, written here so that the CLI's help needs no store
# imports; tests/cli/test_imports.py holds the two equal.
RoleName = Literal["worker", "viewer", "admin"]
ROLES = get_args(RoleName)

app = typer.Typer(
    help="API tokens for `zeroloop serve`: workers, viewers, admins.",
    no_args_is_help=True,
    epilog=examples("zeroloop tokens create --role worker --node gpu-1", "zeroloop tokens ls"),
)


def _when(epoch: float | None) -> str:
    return "" if epoch is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch))


@app.command(
    "create",
    epilog=examples(
        "zeroloop tokens create --role worker --node gpu-1 --expires 30d", "zeroloop tokens create --role viewer"
    ),
)
def create(
    role: RoleName = typer.Option(..., "--role", "-r", help="worker (acts as one node), viewer or admin."),  # noqa: B008
    node: str | None = typer.Option(None, "--node", "-n", help="The node a worker token acts as (required then)."),
    expires: str | None = typer.Option(None, "--expires", "-e", help="Lifetime such as 12h, 30d, 2w; default never."),
    note: str | None = typer.Option(None, "--note", help="A free-form note shown by `tokens ls`."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Create the first token without asking (see below)."),
) -> None:
    """Create a token and print it once: it is stored only as a hash and cannot be shown again.

    The first token closes the open door of loopback: from then on `zeroloop serve` (its worker
    API, dashboard, JSON API and /metrics) refuses requests without a token, from this machine
    too. A running quickstart's own dashboard stays open on this machine. At a terminal the
    first token is created only after you confirm (or with --yes).
    """
    from zeroloop.control.tokens import Role, Tokens, parse_duration

    expires_s = parse_duration(expires) if expires is not None else None
    with open_app() as zl:
        tokens = Tokens(zl.store)
        if not tokens.any_usable():
            err_console.print(FIRST_TOKEN)
            if not yes and sys.stdin.isatty():
                typer.confirm("create it?", abort=True, err=True)
        secret, row = tokens.create(Role(role), node=node, expires_s=expires_s, note=note)
    console.print(f"token {row['id']} ({row['role']}{', node ' + escape(node) if node else ''}) created")
    console.print(f"{USE[row['role']].format(node=escape(node or ''))}; it is not shown again:")
    print(secret)  # plain stdout, no markup or wrapping, so it can be piped


FIRST_TOKEN = (
    "this is the first token: once it exists, `zeroloop serve` (worker API, dashboard, JSON API, /metrics) "
    "refuses requests without a token, from this machine too; a running quickstart's own dashboard stays open "
    "on this machine"
)
USE = {  # what a token of each role is for, said when it is created
    "worker": "give it to the worker of node {node} as ZEROLOOP_SERVER__TOKEN",
    "viewer": "sign in with it at the dashboard's /login, or send it as `Authorization: Bearer` "
    "(Prometheus: the scrape's bearer token for /metrics)",
    "admin": "sign in with it at the dashboard's /login to act there, or send it as `Authorization: Bearer` "
    "to the JSON API",
}


@app.command("ls", epilog=examples("zeroloop tokens ls"))
def list_tokens() -> None:
    """List tokens: id, role, node, created, expires, revoked, last used (never a secret)."""
    from zeroloop.control.tokens import Tokens

    with open_app() as zl:
        rows = Tokens(zl.store).list()
    table = Table(show_header=True, header_style="bold", title="tokens")
    for column in ("id", "role", "node", "created", "expires", "revoked", "last used", "note"):
        table.add_column(column, no_wrap=True)
    now = time.time()
    for row in rows:
        expired = row["expires_at"] is not None and row["expires_at"] <= now
        table.add_row(
            row["id"],
            row["role"],
            escape(row["node"] or ""),
            _when(row["created_at"]),
            ("[red]" if expired else "") + _when(row["expires_at"]) + ("[/red]" if expired else ""),
            _when(row["revoked_at"]),
            _when(row["last_used_at"]),
            escape(row["note"] or ""),
        )
    console.print(table)


@app.command(
    "rotate", epilog=examples("zeroloop tokens rotate 3f9a1c2b7d4e", "zeroloop tokens rotate 3f9a1c2b7d4e --grace 0")
)
def rotate(
    token_id: str = typer.Argument(..., help="The token's id, as `tokens ls` shows it."),
    grace: str = typer.Option("1h", "--grace", "-g", help="How long the old secret keeps working (0: not at all)."),
) -> None:
    """Replace a token's secret: a new token (same role, node, expiry) printed once; the old one stops after --grace.

    Running workers keep going on the credentials they were issued; give the new secret to each worker
    before it next starts.
    """
    from zeroloop.control.tokens import Tokens, parse_duration

    grace_s = 0.0 if grace.strip() in ("0", "0s") else parse_duration(grace)
    with open_app() as zl:
        secret, row = Tokens(zl.store).rotate(token_id, grace_s=grace_s)
    console.print(f"token {row['id']} replaces {escape(token_id)}, which stops working in {grace_s:g} s")
    console.print("give it to the worker as ZEROLOOP_SERVER__TOKEN; it is not shown again:")
    print(secret)  # plain stdout, no markup or wrapping, so it can be piped


@app.command("revoke", epilog=examples("zeroloop tokens revoke 3f9a1c2b7d4e"))
def revoke(token_id: str = typer.Argument(..., help="The token's id, as `tokens ls` shows it.")) -> None:
    """Revoke a token at once, with every credential issued under it: its workers are refused and stop."""
    from zeroloop.control.tokens import Tokens

    with open_app() as zl:
        Tokens(zl.store).revoke(token_id)
    console.print(f"token {escape(token_id)} revoked")
