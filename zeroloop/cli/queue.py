"""`zeroloop queue`: list, inspect, retry and cancel jobs, and show the queue's figures."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from zeroloop.cli.common import console, open_app
from zeroloop.cli.helptext import examples
from zeroloop.cli.tables import Column, fitted
from zeroloop.errors import QueueError
from zeroloop.queue.jobs import JobStatus

if TYPE_CHECKING:
    from zeroloop.app import App
    from zeroloop.queue.jobs import Job

app = typer.Typer(
    help="Inspect and steer the work queue.",
    no_args_is_help=True,
    epilog=examples("zeroloop queue stats", "zeroloop queue ls --dead"),
)

_STYLE = {
    JobStatus.QUEUED: "cyan",
    JobStatus.RUNNING: "yellow",
    JobStatus.COMPLETED: "green",
    JobStatus.DEAD: "red",
    JobStatus.CANCELLED: "dim",
}


def _when(epoch: float | None, *, short: bool = False) -> str:
    return (
        ""
        if epoch is None
        else time.strftime("%m-%d %H:%M:%S" if short else "%Y-%m-%d %H:%M:%S", time.localtime(epoch))
    )


def _status(job: Job) -> str:
    colour = _STYLE[job.status]
    return f"[{colour}]{job.status.value}[/{colour}]"


def known_job_type(zl: App, job_type: str | None) -> str | None:
    """`job_type` if the pipeline runs it or the queue holds such jobs; QueueError listing the known types otherwise."""
    from zeroloop.pipeline import jobs

    if job_type is None:
        return None
    known = set(jobs.JOB_TYPES) | set(zl.queue.stats())
    if job_type not in known:
        raise QueueError(f"unknown job type {job_type!r}: choose from {', '.join(sorted(known))}")
    return job_type


@app.command("ls", epilog=examples("zeroloop queue ls --status running", "zeroloop queue ls --dead -n 10"))
def list_jobs(
    dead: bool = typer.Option(False, "--dead", help="Only dead jobs (out of attempts); retry them with `retry`."),
    status: list[JobStatus] | None = typer.Option(  # noqa: B008 - typer idiom
        None, "--status", "-s", help="Only jobs in this status (repeatable)."
    ),
    job_type: str | None = typer.Option(None, "--type", "-t", help="Only jobs of this type."),
    config_key: str | None = typer.Option(None, "--config", "-c", help="Only jobs of this config key."),
    limit: int = typer.Option(50, "--limit", "-n", min=1, help="Show at most this many, newest first."),
) -> None:
    """List jobs, newest first."""
    from zeroloop.store.values import check_text

    statuses = [JobStatus.DEAD] if dead else list(status or ())
    check_text(config_key, "--config", QueueError)
    with open_app() as zl:
        job_type = known_job_type(zl, job_type)
        jobs = zl.queue.list(statuses=statuses or None, job_type=job_type, config_key=config_key, limit=limit)
    columns = (
        Column("id", key=True, justify="right"),
        Column("type"),
        Column("config", key=True),
        Column("status"),
        Column("prio", drop=1),
        Column("attempts", drop=3),
        Column("node", drop=4),
        Column("updated", drop=2),
        Column("error", drop=5),
    )
    rows = [
        [
            str(job.id),
            escape(job.type),
            escape(job.config_key),
            _status(job),
            str(job.priority),
            f"{job.attempts}/{job.max_attempts}",
            escape(job.lease_node or ""),
            _when(job.updated_at, short=True),
            escape((job.error or "")[:60]),
        ]
        for job in jobs
    ]
    console.print(fitted(columns, rows, width=console.width, title="dead jobs" if dead else "jobs"))
    if not jobs:
        console.print("no jobs match")


@app.command("show", epilog=examples("zeroloop queue show 42"))
def show(job_id: int = typer.Argument(..., help="The job's id.")) -> None:
    """Show everything about one job."""
    with open_app() as zl:
        job = zl.queue.get(job_id)
        deps = zl.queue.dependencies(job_id)
    table = Table(show_header=False, title=f"job {job.id}")
    table.add_column("field", style="bold")
    table.add_column("value")
    rows = [
        ("type", escape(job.type)),
        ("config", escape(job.config_key)),
        ("status", _status(job)),
        ("priority", str(job.priority)),
        ("attempts", f"{job.attempts} of {job.max_attempts}"),
        ("timeout", f"{job.timeout_s:g} s"),
        ("requires", escape(json.dumps(job.requires.model_dump(mode="json")))),
        ("target node", escape(job.target_node or "any")),
        ("depends on", ", ".join(map(str, deps)) or "nothing"),
        ("waiting on", str(job.waiting_on)),
        ("idempotency key", escape(job.idempotency_key or "")),
        ("lease", f"{escape(job.lease_node or '')} token {job.lease_token} until {_when(job.lease_expires_at)}"),
        ("run after", _when(job.run_after)),
        ("created", _when(job.created_at)),
        ("updated", _when(job.updated_at)),
        ("finished", _when(job.finished_at)),
        ("error", escape(job.error or "")),
        ("payload", escape(json.dumps(job.payload))),
        ("result", escape(json.dumps(job.result))),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


@app.command("retry", epilog=examples("zeroloop queue retry 42"))
def retry(job_id: int = typer.Argument(..., help="The id of a dead or cancelled job.")) -> None:
    """Put a dead or cancelled job back in the queue with a fresh set of attempts."""
    with open_app() as zl:
        job = zl.queue.retry(job_id)
    console.print(f"job {job.id} is {_status(job)} again, with {job.max_attempts} attempt(s) to go")


@app.command("cancel", epilog=examples("zeroloop queue cancel 42"))
def cancel(job_id: int = typer.Argument(..., help="The id of a queued or running job.")) -> None:
    """Cancel a queued or running job."""
    with open_app() as zl:
        job = zl.queue.cancel(job_id)
    console.print(f"job {job.id} is {_status(job)}")


@app.command("stats", epilog=examples("zeroloop queue stats"))
def stats() -> None:
    """Job counts by type and status, with each type's backpressure level."""
    from zeroloop.queue.backpressure import BackpressureLevel

    with open_app() as zl:
        counts = zl.queue.stats()
        levels = {job_type: zl.queue.check_backpressure(job_type) for job_type in counts}
    table = Table(show_header=True, header_style="bold", title="queue")
    table.add_column("type")
    for status in JobStatus:
        table.add_column(status.value, justify="right")
    table.add_column("backpressure")
    for job_type, by_status in counts.items():
        level = levels[job_type]
        colour = "green" if level <= BackpressureLevel.LOW else "yellow" if level < BackpressureLevel.STOP else "red"
        table.add_row(
            escape(job_type),
            *(str(by_status.get(status.value, 0)) for status in JobStatus),
            f"[{colour}]{level.name}[/{colour}]",
        )
    console.print(table)
    if not counts:
        console.print("the queue is empty")
