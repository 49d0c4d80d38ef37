"""`zeroloop quickstart`: the whole loop on this machine, from nothing, with live progress.

It opens the embedded store (or the configured one), starts the config's pipeline, runs
the coordinator daemons in this process and `--workers` worker processes beside it, and
shows games, samples, training loss, promotions, ratings and the results against the
baselines as they happen, with log lines above the panel, and serves the web dashboard
on a loopback port, printing its address. Ctrl-C (or the end of
`--minutes`, or a closed terminal) stops the coordinator daemons, then drains the
workers; a second Ctrl-C stops at once. All state is in the store, so running it again
resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import queue
import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from logging.handlers import QueueHandler
from typing import TYPE_CHECKING, Any, Protocol

import typer
from rich.console import Console
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from zeroloop.cli.common import console, finite, require_device, settings
from zeroloop.cli.helptext import examples
from zeroloop.errors import ZeroloopError

if TYPE_CHECKING:
    from zeroloop.app import App
    from zeroloop.config import LogSettings, Settings
    from zeroloop.pipeline.ratings import Rating

REFRESH_S = 2.0  # between redraws (seconds): the panel shows tenths of minutes and counts, not a ticker
REREAD_S = 10.0  # the store is re-read at least this often even when no event was committed (seconds)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # a closed terminal drains too: no orphan workers
WORKER_EXIT_GRACE_S = 15.0  # beyond the drain deadline, for a worker to leave the cluster and exit (seconds)


def last_results(progress: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The last candidate's results by opponent, from a pipeline's progress record: the baselines weakest first
    (random, mcts, mctsbot-N by N), then the production model ("best")."""
    from zeroloop.config import baseline_order

    names = [key.removeprefix("last_vs_") for key in progress if key.startswith("last_vs_")]
    ordered = [*baseline_order([name for name in names if name != "best"], mcts_simulations=0), "best"]
    return {name: progress[f"last_vs_{name}"] for name in ordered if progress.get(f"last_vs_{name}")}


_CONFIG_KEY = re.compile(r"^[a-z0-9_]+_\d+p$")


def config_key_of(game: str) -> str:
    """`tic_tac_toe` -> `tic_tac_toe_2p`; a full config key passes unchanged."""
    return game if _CONFIG_KEY.match(game) else f"{game}_2p"


@dataclass(frozen=True)
class Snapshot:
    """What the progress view shows, read from the store in one go."""

    pipeline: dict[str, Any]
    production: dict[str, Any] | None
    models: int
    queue: dict[str, dict[str, int]]
    ratings: dict[str, Rating] = field(default_factory=dict)
    standing: dict[str, Any] | None = None  # why production is production (zeroloop.control.standing)
    train_after_samples: int = 0  # new samples that start the next training (pipeline.train_after_samples)
    steps_note: str | None = None  # where a training run's number of steps comes from
    unrated_note: str | None = None  # what rates a production model that is not rated yet

    def rating(self, model_id: str) -> Rating:
        """The rating of the production model or of the last evaluated one ("not rated" if unknown)."""
        from zeroloop.pipeline.ratings import Rating

        return self.ratings.get(model_id, Rating(None))


def snapshot(app: App, config_key: str) -> Snapshot:
    """Read the pipeline row, the production model, the ratings on show and queue counts."""
    from zeroloop.control.standing import standing
    from zeroloop.pipeline.ratings import ratings
    from zeroloop.store.queries import models as model_queries
    from zeroloop.store.queries import pipelines as queries

    with app.store.read() as conn:
        row = queries.get_pipeline(conn, config_key)
        production = model_queries.production_model(conn, config_key)
        models = len(model_queries.list_models(conn, config_key=config_key))
        progress = (row["progress"] if row else None) or {}
        shown = {result["model_id"] for result in last_results(progress).values()}
        if production:
            shown.add(production["id"])
        rated = ratings(conn, sorted(shown), app.settings.workload.elo_confidence)
        why = standing(conn, config_key, app.settings)
    return Snapshot(
        dict(row) if row else {},
        dict(production) if production else None,
        models,
        app.queue.stats(),
        rated,
        why,
        app.settings.pipeline.for_key(config_key).train_after_samples,
        steps_note(app.settings, config_key),
        unrated_note(app.settings, config_key),
    )


def unrated_note(settings: Settings, config_key: str) -> str | None:
    """What rates `config_key`'s production model when it was promoted without matches (the gate of none)."""
    if settings.evaluation.for_key(config_key).gate != "none":
        return None  # a gated candidate is rated by its own round's matches
    interval = settings.evaluation.tournament_interval_s
    if interval <= 0:
        return "promoted without matches, and tournaments are off (evaluation.tournament_interval_s): nothing rates it"
    return f"promoted without matches: the next tournament rates it (every {interval / 60:g} min)"


def steps_note(settings: Settings, config_key: str) -> str | None:
    """Why a training run of `config_key` takes the steps it does, when that is not `workload.train_steps`."""
    ratio = settings.pipeline.for_key(config_key).train_samples_per_sample
    if ratio:
        own = "train_samples_per_sample" in settings.pipeline.overrides.get(config_key, {})
        where = f"{config_key}'s preset in pipeline.overrides" if own else "pipeline.train_samples_per_sample"
        return f"steps a run: {ratio:g} training rows per new sample / the batch size ({where})"
    preset = settings.workload.overrides.get(config_key, {}).get("train_steps")
    if preset is None or preset == settings.workload.train_steps:
        return None
    return f"{preset:g} steps a run: {config_key}'s preset in workload.overrides (`zeroloop config`)"


def render(snap: Snapshot, config_key: str, elapsed_s: float, minutes: float, workers: tuple[int, int]) -> Panel:
    """The live progress panel."""
    from zeroloop.control.standing import panel_line

    state = snap.pipeline
    progress = state.get("progress") or {}
    training = progress.get("training") or {}
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("time", f"{elapsed_s / 60:.1f} of {minutes:g} min")
    table.add_row("workers", f"{workers[0]} running ({workers[1]} restarts)")
    table.add_row("stage", f"{state.get('stage', '-')} (round {state.get('iteration', 0)})")
    table.add_row("games", str(progress.get("games_total", 0)))
    table.add_row("samples", samples_line(state, snap.train_after_samples))
    if training:
        table.add_row("training", training_line(training))
        if snap.steps_note:
            table.add_row("", f"[dim]{snap.steps_note}[/dim]")
    table.add_row("models", f"{snap.models} trained, {progress.get('promotions', 0)} promoted")
    if snap.production:
        rating = snap.rating(snap.production["id"])
        games = f", fitted from {rating.games:.0f} games" if rating.rated else ""
        table.add_row("production", f"{snap.production['id']}, {rating.describe()}{games}")
        if not rating.rated and snap.unrated_note:
            table.add_row("", f"[dim]{snap.unrated_note}[/dim]")
        if why := panel_line(snap.standing):
            table.add_row("why production", why)
    results = last_results(progress)
    production_id = snap.production["id"] if snap.production else None
    for model_id in sorted({result["model_id"] for result in results.values()} - {production_id}):
        table.add_row("last candidate", f"{model_id}, {snap.rating(model_id).describe()}")
    for opponent, result in results.items():
        won = f"won {result['wins']}, drew {result['draws']}, lost {result['losses']}"
        table.add_row(f"vs {opponent}", f"{won} [dim]{result['model_id']}[/dim]")
    queued = {kind: counts.get("queued", 0) + counts.get("running", 0) for kind, counts in snap.queue.items()}
    table.add_row("jobs", ", ".join(f"{kind} {count}" for kind, count in sorted(queued.items())) or "-")
    if state.get("paused"):
        table.add_row("paused", str(state.get("pause_reason")))
    return Panel(table, title=f"zeroloop quickstart: {config_key}", subtitle="Ctrl-C stops cleanly")


@contextlib.contextmanager
def logs_through(target: Console, options: LogSettings | None = None) -> Iterator[Callable[[], None]]:
    """Hold log records while the block runs; the function yielded prints them through `target`.

    They print as `options` (the logs settings) say for `target`: rich lines on a terminal,
    plain or JSON lines when it is a file or a pipe. With `logs.file` set, records keep
    going to that file and nothing is held.

    Rich's Live redirects sys.stdout and sys.stderr only: a handler printing to another
    Console writes around the live region, which then redraws over the log lines (losing
    them) and leaves stale copies of itself behind. Printing through the live console from
    several threads at once can still race on the region's height, so records from every
    thread wait in a queue and the display's own loop prints them, above the region, just
    before it redraws. Records still queued at the end are printed on the way out.
    """
    from zeroloop import logs
    from zeroloop.config import LogSettings

    options = options or LogSettings()
    if options.file is not None:
        yield lambda: None
        return
    pending: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    printer = logs.handler(options, target)
    root = logging.getLogger()
    saved = list(root.handlers)

    def print_pending() -> None:
        while True:
            try:
                record = pending.get_nowait()
            except queue.Empty:
                return
            printer.handle(record)

    root.handlers = [QueueHandler(pending)]
    try:
        yield print_pending
    finally:
        root.handlers = saved
        print_pending()


POOL = "quickstart"  # the local provider pool the quickstart's workers belong to


def with_local_pool(settings: Settings, workers: int) -> Settings:
    """The settings plus a local pool of exactly `workers` workers, replaced promptly when one dies."""
    from zeroloop.config import PoolSettings

    pool = PoolSettings(kind="local", profile="training_node", min_nodes=workers, max_nodes=workers)
    autoscaler = settings.autoscaler.model_copy(update={"interval_s": min(settings.autoscaler.interval_s, 2.0)})
    return settings.model_copy(update={"providers": {**settings.providers, POOL: pool}, "autoscaler": autoscaler})


class Workers(Protocol):
    """What the drain needs of the local workers."""

    def stop(self, deadline_s: float) -> None:
        """SIGTERM every worker, and kill those still running after `deadline_s` seconds."""


class LocalPool:
    """The quickstart's workers: a local provider pool that the autoscaler keeps at `--workers` nodes."""

    def __init__(self, app: App, workers: int) -> None:
        from zeroloop.fleet.providers.local import LocalProvider

        self.app = app
        self.workers = workers
        provider = app.fleet.provider(POOL)
        assert isinstance(provider, LocalProvider)
        self.provider: LocalProvider = provider
        self.started_at = app.clock()

    def counts(self) -> tuple[int, int]:
        """(workers running now, replacements launched since this run started)."""
        rows = [row for row in self.app.nodes.list_nodes() if row["pool"] == POOL]
        running = sum(1 for row in rows if row["status"] == "active")
        launched = sum(1 for row in rows if (row["launched_at"] or 0.0) >= self.started_at)
        return running, max(0, launched - self.workers)

    def stop(self, deadline_s: float) -> None:
        """Stop every worker through the fleet (SIGTERM: they drain), kill those left after `deadline_s` seconds."""
        from zeroloop.cluster.nodes import LIVE, STARTING
        from zeroloop.fleet.manager import FleetError

        fleet = self.app.fleet
        for row in self.app.nodes.list_nodes((*STARTING, *LIVE)):
            if row["pool"] == POOL:
                try:
                    fleet.terminate(row["id"], reason="quickstart stopping")
                except FleetError as exc:
                    logging.getLogger(__name__).warning("%s", exc)
        end = time.monotonic() + deadline_s
        while self.provider.machines() and time.monotonic() < end:
            time.sleep(0.2)  # polls the worker processes' exit against the deadline
        for machine in self.provider.machines():
            self.provider.kill(machine.provider_id)
        fleet.reconcile(self.app.queue.requeue_node)  # stopped machines are recorded terminated


async def drain(app: App, local: Workers, *, force: bool) -> None:
    """Stop making work, then let the workers finish theirs and leave the cluster.

    The coordinator daemons stop first, so no round or job starts while workers drain; what
    the workers finish meanwhile is in the event log and is handled on the next start.
    """
    from zeroloop.bootstrap import shutdown_all_coordinators

    await shutdown_all_coordinators(app)
    # A worker drains its daemons within drain_deadline_s and then leaves the cluster; killing it
    # at that same deadline would cut its exit short (leaked semaphores, a node later "lost").
    grace_s = 0.0 if force else app.settings.daemons.drain_deadline_s + WORKER_EXIT_GRACE_S
    await asyncio.to_thread(local.stop, grace_s)


class ScreenData:
    """What the panel shows, re-read from the store only when it may have changed.

    Everything on the panel moves with an event (a job, a batch, a model, a node), so on
    SQLite the store is read again only when the event signal rang since the last read, and
    at least every REREAD_S seconds; on PostgreSQL on every redraw.
    """

    def __init__(
        self,
        app: App,
        config_key: str,
        counts: Callable[[], tuple[int, int]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.config_key = config_key
        self.counts = counts  # (workers running, restarts)
        self.clock = clock
        self._stamp: object = None
        self._read_at = -math.inf
        self._cached: tuple[Snapshot, tuple[int, int]] | None = None

    def read(self) -> tuple[Snapshot, tuple[int, int]]:
        """The snapshot and (workers running, restarts), from the store or as last read."""
        signal = self.app.store.event_signal
        stamp = signal.stamp() if signal is not None else None
        now = self.clock()
        fresh = signal is not None and stamp == self._stamp and now - self._read_at < REREAD_S
        if self._cached is None or not fresh:
            self._cached = (snapshot(self.app, self.config_key), self.counts())
            self._stamp, self._read_at = stamp, now
        return self._cached


async def run_quickstart(app: App, config_key: str, minutes: float, workers: int) -> Snapshot:
    """Run the loop for `minutes` (or until a signal) and return the final snapshot."""
    from zeroloop.bootstrap import initialize_all_coordinators
    from zeroloop.cli.run import table_for_cli

    loop = asyncio.get_running_loop()
    stop, force = asyncio.Event(), asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        # One stop, one drain: only a person pressing Ctrl-C again stops at once; a repeated SIGTERM
        # or SIGHUP (a service manager, a closing terminal) changes nothing.
        if sig is signal.SIGINT and stop.is_set():
            force.set()
        stop.set()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    local = LocalPool(app, workers)
    screen = ScreenData(app, config_key, local.counts)
    started = time.monotonic()
    try:
        status = await initialize_all_coordinators(app, profile="coordinator", table=table_for_cli())
        if status["failed"]:
            raise ZeroloopError(f"coordinator daemons failed to start: {', '.join(status['failed'])}")
        deadline = started + minutes * 60
        # One thread draws: no auto-refresh thread, and log records wait for the loop (see logs_through).
        live = Live(console=console, auto_refresh=False, transient=False)
        with logs_through(live.console, app.settings.logs) as print_logs, live:
            while not stop.is_set() and time.monotonic() < deadline:
                snap, (running, restarts) = await asyncio.to_thread(screen.read)
                print_logs()
                panel = render(snap, config_key, time.monotonic() - started, minutes, (running, restarts))
                live.update(panel, refresh=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=REFRESH_S)
        console.print("stopping: no new work; draining workers and daemons (Ctrl-C again to stop at once)")
        await drain(app, local, force=force.is_set())
        return await asyncio.to_thread(snapshot, app, config_key)
    finally:
        local.stop(0.0)
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


def samples_line(state: dict[str, Any], needed: int) -> str:
    """Samples in all and, while selfplay gathers them, how far along the next training's share is."""
    total, since = state.get("samples_total", 0), state.get("samples_since_training", 0)
    if state.get("stage", "selfplay") == "selfplay" and needed and since < needed:
        first = "the first training" if not state.get("iteration") else "the next training"
        return f"{total} ({since} of the {needed} {first} needs, {100 * since / needed:.0f}%)"
    return f"{total} ({since} since training)"


def training_line(training: dict[str, Any]) -> str:
    """Training progress: the step reached (the final one once done), the loss and, while running, the speed."""
    from zeroloop.cli.pipeline import training_summary

    speed = training.get("samples_per_s")
    running = speed and not training.get("finished")
    return training_summary(training) + (f", {speed:.0f} samples/s" if running else "")


def summary(snap: Snapshot, config_key: str, elapsed_s: float) -> Table:
    """What was achieved, for the end of the run.

    The rating is the joint fit as it stands after the drain (matches that finished while
    draining refit it), so it may differ from the panel's last one: the table says what it rests on.
    """
    from zeroloop.control.standing import panel_line, rating_note

    state = snap.pipeline
    progress = state.get("progress") or {}
    table = Table("", "", title=f"{config_key}: after {elapsed_s / 60:.1f} minutes", show_header=False)
    table.add_row("rounds completed", str(state.get("iteration", 0)))
    table.add_row("games played", str(progress.get("games_total", 0)))
    table.add_row("samples", str(state.get("samples_total", 0)))
    table.add_row("models trained / promoted", f"{snap.models} / {progress.get('promotions', 0)}")
    table.add_row("production model", snap.production["id"] if snap.production else "none yet")
    if snap.production:
        table.add_row("its rating", snap.rating(snap.production["id"]).describe())
        if note := rating_note(snap.standing):
            table.add_row("rating rests on", note)
        if why := panel_line(snap.standing):
            table.add_row("why production", why)
    for opponent, result in last_results(progress).items():
        if opponent != "best":
            table.add_row(f"last candidate vs {opponent}", f"+{result['wins']} ={result['draws']} -{result['losses']}")
    return table


def quickstart_command(
    game: str = typer.Option("tic_tac_toe", "--game", "-g", help="OpenSpiel game (e.g. connect_four) or config key."),
    minutes: float = typer.Option(10.0, "--minutes", "-m", min=0.1, callback=finite, help="How long to run (minutes)."),
    workers: int = typer.Option(2, "--workers", "-w", min=1, max=64, help="Worker processes on this machine."),
) -> None:
    """Run the whole self-improvement loop on this machine, with live progress and a dashboard; run again to resume."""
    from zeroloop.app import App
    from zeroloop.bootstrap import start_pipeline
    from zeroloop.server.background import serving

    loaded = with_local_pool(settings(), workers)
    require_device(loaded)  # the local workers run on this machine
    config_key = config_key_of(game)
    started = time.monotonic()
    with App(loaded, source="quickstart") as app, serving(app) as dashboard:
        start_pipeline(app, config_key)
        console.print(f"data directory {loaded.data_dir}; store {app.store.display_url}")
        console.print(f"dashboard {dashboard}/dashboard (metrics at {dashboard}/metrics)")
        final = asyncio.run(run_quickstart(app, config_key, minutes, workers))
    console.print(summary(final, config_key, time.monotonic() - started))
    console.print("run `zeroloop quickstart` again to continue; `zeroloop models ls` lists the models")


def register(app: typer.Typer) -> None:
    """Add `quickstart` to the top-level command."""
    app.command(
        "quickstart",
        epilog=examples(
            "zeroloop quickstart",
            "zeroloop quickstart --game connect_four --minutes 60 --workers 4",
        ),
    )(quickstart_command)
