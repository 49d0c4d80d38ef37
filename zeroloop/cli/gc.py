"""`zeroloop gc`: apply the retention settings now, and find orphans both ways."""

from __future__ import annotations

import typer
from rich.table import Table

from zeroloop.cli.common import console, open_app
from zeroloop.cli.helptext import examples


def register(app: typer.Typer) -> None:
    """Add `zeroloop gc` to the CLI."""
    app.command("gc", epilog=examples("zeroloop gc --dry-run", "zeroloop gc", "zeroloop gc --repair"))(gc)


def gc(
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would go; change nothing."),
    repair: bool = typer.Option(
        False, "--repair", help="Also delete files no manifest row names, and rows whose file is gone."
    ),
    show: bool = typer.Option(False, "--show", help="List every sha256 and key, not only the counts."),
) -> None:
    """Delete finished jobs, old game batches and rejected models past `retention.*`; report orphans."""
    from zeroloop.ops.gc import GarbageCollector

    with open_app() as app:
        collector = GarbageCollector(app.store, app.bus, app.artifacts, app.settings, clock=app.clock)
        report = collector.collect(dry_run=dry_run, repair=repair)
    table = Table(show_header=True, header_style="bold", title="would go (dry run)" if dry_run else "deleted")
    table.add_column("what")
    table.add_column("count", justify="right")
    for what, count in report.counts().items():
        label = what.replace("_", " ")
        if what in ("orphan_files", "missing_files"):
            label += " (repaired)" if report.repaired else " (found; --repair removes)"
        table.add_row(label, str(count))
    console.print(table)
    console.print(f"artifact bytes {'to free' if dry_run else 'freed'}: {report.bytes_freed}")
    if show:
        for model_id in report.rejected_models:
            console.print(f"rejected model {model_id}")
        for kind, shas in report.artifacts.items():
            for sha in shas:
                console.print(f"{kind} {sha}")
        for key in report.orphan_files:
            console.print(f"orphan file {key}")
        for sha in report.missing_files:
            console.print(f"row without file {sha}")
