"""`zeroloop backup`: snapshots of the store and the artifact manifest; verifying and restoring one."""

from __future__ import annotations

import time

import typer
from rich.markup import escape
from rich.table import Table

from zeroloop.cli.common import console, err_console, settings
from zeroloop.cli.helptext import examples

app = typer.Typer(
    help="Back up the store and the artifact manifest to backup.url, list backups, verify and restore one.",
    no_args_is_help=True,
    epilog=examples(
        "zeroloop backup create",
        "zeroloop backup ls",
        "zeroloop backup verify 20261201T180000Z-1a2b3c",
        "zeroloop backup restore 20261201T180000Z-1a2b3c",
    ),
)


@app.command("create", epilog=examples("zeroloop backup create", "zeroloop backup create --keep 3"))
def create(
    keep: int = typer.Option(0, "--keep", min=0, help="Then delete all but the newest N backups (0: backup.keep)."),
) -> None:
    """Take a consistent snapshot of the store (safe while the loop runs) and its manifest."""
    from zeroloop.config import redact
    from zeroloop.ops.backup import Backups
    from zeroloop.store.database import Store

    loaded = settings()
    with Store.for_settings(loaded) as store:
        backups = Backups(loaded, store)
        info = backups.create()
        pruned = backups.prune(keep or loaded.backup.keep)
    console.print(
        f"backup {info.id}: {info.store_bytes} bytes of {info.backend} store (schema {info.schema_revision}), "
        f"{info.artifacts} artifacts in the manifest, at {escape(redact(backups.url))}"
    )
    if pruned:
        console.print(f"deleted {len(pruned)} older backup(s): {', '.join(pruned)}")


@app.command("ls", epilog=examples("zeroloop backup ls"))
def ls() -> None:
    """List the finished backups at backup.url, oldest first."""
    from zeroloop.config import redact
    from zeroloop.ops.backup import Backups
    from zeroloop.store.database import Store

    loaded = settings()
    with Store.for_settings(loaded) as store:
        backups = Backups(loaded, store)
        found = backups.ls()
    table = Table(show_header=True, header_style="bold", title=escape(redact(backups.url)))
    for column in ("id", "taken (UTC)", "kind", "backend", "schema", "store bytes", "artifacts"):
        table.add_column(column)
    for info in found:
        taken = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(info.created_at))
        table.add_row(
            info.id,
            taken,
            info.label or "backup",
            info.backend,
            info.schema_revision or "-",
            str(info.store_bytes),
            str(info.artifacts),
        )
    console.print(table)
    if not found:
        console.print("no backups yet: `zeroloop backup create` takes one")


@app.command(
    "verify",
    epilog=examples("zeroloop backup verify 20261201T180000Z-1a2b3c"),
)
def verify(
    backup_id: str = typer.Argument(..., metavar="ID", help="The backup to verify (see `zeroloop backup ls`)."),
) -> None:
    """Prove backup ID restores: check it and restore it into a scratch store; the live store is not touched."""
    from zeroloop.ops.backup import Backups
    from zeroloop.ops.restore import Restorer
    from zeroloop.store.database import Store

    loaded = settings()
    with Store.for_settings(loaded) as store:
        report = Restorer(Backups(loaded, store)).verify(backup_id)
    info = report.backup
    rows = ", ".join(f"{table} {count}" for table, count in report.rows.items() if count)
    upgraded = f", upgrades from {report.upgraded_from}" if report.upgraded_from else ""
    console.print(
        f"backup {info.id} restores: {info.backend} schema {info.schema_revision}{upgraded}, "
        f"{info.artifacts} artifacts in the manifest; rows: {rows or 'none'}"
    )
    if report.missing_artifacts:
        err_console.print(
            f"[yellow]{len(report.missing_artifacts)} artifact(s) of the manifest are missing from the artifact "
            "location[/yellow]: a restore refuses past artifacts.missing_max_pct unless --force"
        )


@app.command(
    "restore",
    epilog=examples("zeroloop backup restore 20261201T180000Z-1a2b3c --yes"),
)
def restore(
    backup_id: str = typer.Argument(..., metavar="ID", help="The backup to restore (see `zeroloop backup ls`)."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask before replacing the store."),
    force: bool = typer.Option(
        False,
        "--force",
        help="Restore even while a lease shows a process still running, or where the artifact location lacks "
        "much of the backup's manifest.",
    ),
) -> None:
    """Check backup ID, keep a copy of the store as it is, and restore ID in its place; stop every zeroloop
    process first."""
    from zeroloop.ops.backup import Backups
    from zeroloop.ops.restore import Restorer
    from zeroloop.store.database import Store

    loaded = settings()
    with Store.for_settings(loaded) as store:
        backups = Backups(loaded, store)
        info = backups.get(backup_id)
        if not yes and not typer.confirm(f"replace the store at {store.display_url} with backup {info.id}?"):
            err_console.print("restore cancelled; nothing changed")
            raise typer.Exit(1)
        report = Restorer(backups).restore(backup_id, force=force)
    console.print(f"restored backup {info.id} into {store.display_url}")
    if report.pre_restore is not None:
        way_back = (
            f"`zeroloop backup restore {report.pre_restore}` rolls back"
            if "/" not in report.pre_restore
            else "it was no zeroloop store"
        )
        console.print(f"the store as it was is kept as {report.pre_restore}: {way_back}")
    if report.upgraded_from is not None:
        console.print(f"schema upgraded from {report.upgraded_from} to the current revision")
    if report.missing_artifacts:
        err_console.print(
            f"[yellow]{len(report.missing_artifacts)} artifact(s) of the manifest are missing from the artifact "
            "location[/yellow]: point artifacts.url at the location the backup was taken with, or run "
            "`zeroloop gc --repair` to drop their rows"
        )
    console.print("start the loop again (`zeroloop run`, `zeroloop coordinator`, ...): it resumes from the backup")
