"""The quickstart's drain: nothing makes new work while the workers finish theirs; logs go through the live console."""

from __future__ import annotations

import asyncio
import logging
import threading

from rich.console import Console

from tests.helpers import run_async
from zeroloop.app import App
from zeroloop.bootstrap import initialize_all_coordinators
from zeroloop.cli.quickstart import WORKER_EXIT_GRACE_S, drain, logs_through
from zeroloop.daemons.daemon import DaemonHealth, DaemonState, HealthState
from zeroloop.daemons.table import DaemonSpec, DaemonTable, Layer


class Producer:
    """Stands in for the scheduler and the pipeline coordinator."""

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()

    def health(self) -> DaemonHealth:
        return DaemonHealth(HealthState.HEALTHY)


class RecordingWorkers:
    """Local workers that note, when told to stop, whether anything could still make work."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.calls: list[tuple[float, set[DaemonState]]] = []

    def stop(self, deadline_s: float) -> None:
        assert self.app.daemons is not None
        self.calls.append((deadline_s, {record.state for record in self.app.daemons.records.values()}))


def _table() -> DaemonTable:
    table = DaemonTable()
    table.add(DaemonSpec("producer", lambda _ctx: Producer(), "t", frozenset({"coordinator"}), layer=Layer.CORE))
    return table


@run_async
async def test_coordinators_stop_before_the_workers_drain_and_workers_get_time_to_leave(app: App) -> None:
    await initialize_all_coordinators(app, profile="coordinator", table=_table())
    assert app.daemons is not None and app.daemons.records["producer"].state is DaemonState.RUNNING
    workers = RecordingWorkers(app)
    await drain(app, workers, force=False)
    [(deadline_s, states)] = workers.calls
    assert states == {DaemonState.STOPPED}  # no round or job can start while workers drain
    assert deadline_s == app.settings.daemons.drain_deadline_s + WORKER_EXIT_GRACE_S > 0


@run_async
async def test_a_second_signal_stops_the_workers_at_once(app: App) -> None:
    await initialize_all_coordinators(app, profile="coordinator", table=_table())
    workers = RecordingWorkers(app)
    await drain(app, workers, force=True)
    assert workers.calls[0][0] == 0.0


def test_log_records_from_any_thread_wait_for_the_display_loop_then_print_through_its_console() -> None:
    live_console = Console(record=True, width=100)
    root = logging.getLogger()
    before = list(root.handlers)
    with logs_through(live_console) as print_logs:
        thread = threading.Thread(target=root.warning, args=("a line the panel must not hide",))
        thread.start()
        thread.join(timeout=10)
        root.warning("and one more from the loop itself")
        assert live_console.export_text(clear=False) == ""  # nothing printed outside the loop's turn
        print_logs()
        shown = live_console.export_text()
        assert "a line the panel must not hide" in shown and "and one more" in shown
        root.warning("left over at the end")
    assert root.handlers == before
    assert "left over at the end" in live_console.export_text()
