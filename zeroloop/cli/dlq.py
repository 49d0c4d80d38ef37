"""`zeroloop dlq`: list, show, retry and drop dead letters."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from zeroloop.cli.common import console, open_app
from zeroloop.cli.helptext import examples
from zeroloop.errors import EventError

app = typer.Typer(
    help="Dead letters: events a consumer kept failing on.",
    no_args_is_help=True,
    epilog=examples("zeroloop dlq ls", "zeroloop dlq show 3", "zeroloop dlq retry 3"),
)


@app.command("ls", epilog=examples("zeroloop dlq ls", "zeroloop dlq ls --all --consumer alerts"))
def ls(
    show_all: bool = typer.Option(False, "--all", help="Also resolved and dropped letters."),
    consumer: str | None = typer.Option(None, "--consumer", help="Only this consumer's letters."),
    limit: int = typer.Option(100, "--limit", "-n", min=1, help="How many to list, newest first."),
) -> None:
    """List dead letters (pending and parked unless --all)."""
    from zeroloop.events.deadletters import LIVE, DeadLetters
    from zeroloop.store.queries import consumers as consumer_queries

    with open_app() as zl:
        letters_of = DeadLetters(zl.store)
        if consumer is not None:
            with zl.store.read() as conn:
                known = sorted(row["name"] for row in consumer_queries.list_consumers(conn))
            # A forgotten consumer's letters still count: only a name nothing knows is refused.
            if consumer not in known and not letters_of.list(statuses=(), consumer=consumer, limit=1):
                raise EventError(f"no consumer named {consumer!r}: choose from {', '.join(known) or 'none yet'}")
        letters = letters_of.list(statuses=() if show_all else LIVE, consumer=consumer, limit=limit)
    table = Table(header_style="bold")
    for column in ("id", "event", "consumer", "status", "attempts", "error"):
        table.add_column(column)
    for letter in letters:
        table.add_row(
            str(letter.id),
            str(letter.event_id),
            letter.consumer,
            letter.status,
            str(letter.attempts),
            escape(letter.error.splitlines()[0] if letter.error else ""),
        )
    console.print(table)


@app.command("show", epilog=examples("zeroloop dlq show 3"))
def show(letter_id: int = typer.Argument(..., help="The dead letter's id.")) -> None:
    """Print one dead letter: its event, error and traceback."""
    from zeroloop.events.deadletters import DeadLetters

    with open_app() as zl:
        manager = DeadLetters(zl.store)
        letter = manager.get(letter_id)
        event = manager.event(letter)
    data: dict[str, Any] = {
        "id": letter.id,
        "consumer": letter.consumer,
        "status": str(letter.status),
        "attempts": letter.attempts,
        "next_retry_at": letter.next_retry_at,
        "error": letter.error,
        "event": None if event is None else {"id": event.id, "type": event.type, "payload": event.payload},
    }
    console.print_json(json.dumps(data))
    console.print(escape(letter.traceback), soft_wrap=True)


@app.command("retry", epilog=examples("zeroloop dlq retry 3"))
def retry(letter_id: int = typer.Argument(..., help="The dead letter's id.")) -> None:
    """Make a pending or parked letter due now; the consumer's retrier re-delivers it on its next pass."""
    from zeroloop.events.deadletters import DeadLetters

    with open_app() as zl:
        letter = DeadLetters(zl.store).retry(letter_id)
    console.print(f"dead letter {letter.id} is {letter.status}, due now")


@app.command("drop", epilog=examples("zeroloop dlq drop 3"))
def drop(letter_id: int = typer.Argument(..., help="The dead letter's id.")) -> None:
    """Give up on a dead letter (its event stays in the log until retention prunes it)."""
    from zeroloop.events.deadletters import DeadLetters

    with open_app() as zl:
        letter = DeadLetters(zl.store).drop(letter_id)
    console.print(f"dead letter {letter.id} is {letter.status}")
