"""`zeroloop gc`: apply the retention settings now, find orphans both ways, and say why what stays stays."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from zeroloop.cli.common import console, err_console, open_app
from zeroloop.cli.helptext import examples


def register(app: typer.Typer) -> None:
    """Add `zeroloop gc` to the CLI."""
    app.command(
        "gc",
        epilog=examples("zeroloop gc --dry-run", "zeroloop gc", "zeroloop gc --dry-run --show", "zeroloop gc --repair"),
    )(gc)


def gc(
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would go; change nothing."),
    repair: bool = typer.Option(
        False,
        "--repair",
        help="Also delete files no manifest row names, and rows whose file is gone. Refused when the artifact "
        "location looks wrong (absent, empty, or missing more than artifacts.missing_max_pct of the manifest).",
    ),
    force: bool = typer.Option(False, "--force", help="Repair even where the artifact location looks wrong."),
    show: bool = typer.Option(
        False, "--show", help="List every sha256 and key that goes, and why each thing that stays is kept."
    ),
) -> None:
    """Delete finished jobs, old game batches, rejected models, old match results and late outputs past
    `retention.*`; abort stale S3 multipart uploads; report orphans."""
    from zeroloop.ops.gc import GarbageCollector

    with open_app() as app:
        collector = GarbageCollector(app.store, app.bus, app.artifacts, app.settings, clock=app.clock)
        report = collector.collect(dry_run=dry_run, repair=repair, force=force)
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
    if report.repair_refused:
        err_console.print(
            f"[yellow]the artifact location looks wrong: {escape(report.repair_refused)}; --repair would refuse "
            "(--force overrides)[/yellow]"
        )
    if show:
        for model_id in report.rejected_models:
            console.print(f"rejected model {model_id}")
        for kind, shas in report.artifacts.items():
            for sha in shas:
                late = report.late_outputs.get(sha)
                console.print(f"{kind} {sha}" + (f": {escape(late)}" if late else ""))
        for upload in report.incomplete_uploads:
            console.print(f"incomplete upload {escape(upload)}")
        for key in report.orphan_files:
            console.print(f"orphan file {key}")
        for sha in report.missing_files:
            console.print(f"row without file {sha}")
        for what, reasons in report.kept.items():
            console.print(f"kept {what}: {escape('; '.join(reasons))}")
