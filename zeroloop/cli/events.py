"""`zeroloop events`: the event log's history, replay, consumers and metrics."""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from zeroloop.cli.common import console, open_app
from zeroloop.cli.helptext import examples
from zeroloop.errors import EventError

if TYPE_CHECKING:
    from zeroloop.app import App
    from zeroloop.events.bus import Event
    from zeroloop.store.queries.events import Position

app = typer.Typer(
    help="Inspect the event log, replay it to a consumer, and see delivery metrics.",
    no_args_is_help=True,
    epilog=examples("zeroloop events tail --follow", "zeroloop events stats"),
)


def _line(event: Event) -> str:
    when = datetime.fromtimestamp(event.created_at, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    key = f" [{event.config_key}]" if event.config_key else ""
    payload = json.dumps(event.payload, separators=(",", ":"))
    return f"{event.id:>8} {when} {event.type}{key} {event.source}@{event.node} {payload}"


TypeOption = Annotated[
    list[str] | None,
    typer.Option(
        "--type", "-t", help="Only this event type (repeatable); an unknown one is refused with the list of types."
    ),
]
ConfigOption = Annotated[list[str] | None, typer.Option("--config", "-c", help="Only this config key (repeatable).")]


def known_types(types: list[str] | None) -> list[str]:
    """The event types given, each checked against the catalogue; EventError listing the known ones otherwise."""
    from zeroloop.events.catalogue import EVENT_TYPES

    unknown = [name for name in types or [] if name not in EVENT_TYPES]
    if unknown:
        raise EventError(
            f"unknown event type {', '.join(map(repr, unknown))}: choose from {', '.join(sorted(EVENT_TYPES))}"
        )
    return list(types or [])


def config_keys_given(keys: list[str] | None) -> list[str] | None:
    """The config keys given, refused when empty or holding a NUL (no event could carry such a key)."""
    from zeroloop.store.values import check_text

    for key in keys or []:
        check_text(key, "--config", EventError)
        if not key:
            raise EventError("--config needs a config key such as connect_four_2p, not an empty string")
    return list(keys) if keys else None


@app.command(
    "tail",
    epilog=examples(
        "zeroloop events tail -n 50",
        "zeroloop events tail --follow --type MODEL_PROMOTED --config tic_tac_toe_2p",
    ),
)
def tail(
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new events until Ctrl-C."),
    types: TypeOption = None,
    config_keys: ConfigOption = None,
    limit: int = typer.Option(20, "--limit", "-n", min=0, help="How many past events to print first."),
) -> None:
    """Print the newest events, and with --follow every new one as it is committed."""
    from zeroloop.events.bus import Event
    from zeroloop.store.queries import events as queries

    types = known_types(types)
    config_keys = config_keys_given(config_keys)
    stopping: list[int] = []
    # Following, Ctrl-C only sets a flag and the loop stops between reads: a clean exit 0.
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: stopping.append(signum)) if follow else None
    try:
        with open_app() as zl:
            with zl.store.read() as conn:
                rows = queries.latest(conn, types=types, config_keys=config_keys, limit=limit)
                position = queries.high_water(conn, limit_horizon=queries.horizon(conn))
            for row in rows:
                console.print(escape(_line(Event.from_row(row))), soft_wrap=True)
            if follow:
                _follow(zl, position, types, config_keys, stopping)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _follow(zl: App, position: Position, types: list[str], keys: list[str] | None, stopping: list[int]) -> None:
    from zeroloop.events.bus import Event
    from zeroloop.store.queries import events as queries

    while not stopping:
        with zl.store.read() as conn:
            limit_horizon = queries.horizon(conn)
            batch = queries.read_after(conn, position, limit_horizon=limit_horizon, types=types, config_keys=keys)
            if len(batch) < 500:
                position = max(position, queries.high_water(conn, limit_horizon=limit_horizon))
        for row in batch:
            event = Event.from_row(row)
            position = max(position, event.position)
            console.print(escape(_line(event)), soft_wrap=True)
        if not batch:
            time.sleep(zl.settings.events.poll_interval_s)


@app.command("replay", epilog=examples("zeroloop events replay --consumer alerts --from 1200"))
def replay(
    consumer: str = typer.Option(..., "--consumer", help="The durable consumer to rewind."),
    from_id: int = typer.Option(..., "--from", min=1, help="The first event id to handle again."),
) -> None:
    """Rewind a durable consumer so it handles again every event from --from on (its handlers must be idempotent).

    Replay only rewinds: an id past the newest event, or past what the consumer has
    handled, is refused (moving the cursor forward would skip events it never handled).
    """
    from zeroloop.store.queries import consumers as consumer_queries
    from zeroloop.store.queries import events as queries

    with open_app() as zl, zl.store.transaction() as conn:
        cursor = consumer_queries.get_cursor(conn, consumer)
        if cursor is None:
            raise EventError(f"no consumer named {consumer!r}: see `zeroloop events stats`")
        _horizon, _high, newest = queries.marks(conn)
        if newest[1] == 0:
            raise EventError("the event log is empty: there is nothing to replay")
        if from_id > newest[1]:
            raise EventError(f"--from {from_id} is past the newest event (id {newest[1]}): give 1 to {newest[1]}")
        position = queries.position_before(conn, from_id)
        if position > cursor:
            raise EventError(
                f"consumer {consumer} has handled events only up to id {cursor[1]}: replay rewinds, so give "
                f"--from {cursor[1] + 1} or lower (a later id would skip events it never handled)"
            )
        consumer_queries.reset_cursor(conn, consumer, position, now=time.time())
    console.print(f"consumer {consumer} will handle events again from id {from_id}")


@app.command("stats", epilog=examples("zeroloop events stats"))
def stats_command() -> None:
    """Events in the log per type; per consumer: cursor, lag and delivered/failed/dead counts per type."""
    from zeroloop.events.stats import stats

    with open_app() as zl:
        result = stats(zl.store)
    table = Table(title="events in the log", header_style="bold")
    table.add_column("type")
    table.add_column("published", justify="right")
    for event_type, count in sorted(result.published.items()):
        table.add_row(event_type, str(count))
    console.print(table)
    consumers = Table(title="consumers", header_style="bold")
    for column in ("consumer", "cursor", "lag", "type", "delivered", "failed", "dead"):
        consumers.add_column(column)
    for item in result.consumers:
        rows = sorted(item.counters.items()) or [("-", {"delivered": 0, "failed": 0, "dead": 0})]
        for index, (event_type, counts) in enumerate(rows):
            head = (item.name, str(item.cursor[1]), str(item.lag)) if index == 0 else ("", "", "")
            consumers.add_row(*head, event_type, *(str(counts[k]) for k in ("delivered", "failed", "dead")))
    console.print(consumers)
    letters = ", ".join(f"{status}: {count}" for status, count in sorted(result.dead_letters.items())) or "none"
    console.print(f"dead letters: {letters}")


@app.command("forget", epilog=examples("zeroloop events forget --consumer old-dashboard"))
def forget(consumer: str = typer.Option(..., "--consumer", help="The durable consumer to remove.")) -> None:
    """Remove a durable consumer that no longer runs, so its cursor stops holding back retention."""
    from zeroloop.store.queries import consumers as consumer_queries

    with open_app() as zl, zl.store.transaction() as conn:
        if not consumer_queries.delete_consumer(conn, consumer):
            raise EventError(f"no consumer named {consumer!r}: see `zeroloop events stats`")
    console.print(f"consumer {consumer} removed")
