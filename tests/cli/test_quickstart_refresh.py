"""The quickstart's panel reads the store only when an event was committed since, or after REREAD_S."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import FakeClock, make_app
from zeroloop.cli.quickstart import REREAD_S, ScreenData
from zeroloop.config import Settings
from zeroloop.store import migrate
from zeroloop.store.database import Store


def test_the_panel_rereads_on_an_event_or_when_stale_and_otherwise_shows_what_it_read(
    tmp_path: Path, settings: Settings
) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with Store(url) as store:
        migrate.upgrade(store)
    clock = FakeClock()
    reads: list[float] = []

    def counts() -> tuple[int, int]:
        reads.append(clock())
        return (2, 0)

    with make_app(url, tmp_path) as app:
        screen = ScreenData(app, "tic_tac_toe_2p", counts, clock=clock)
        first = screen.read()
        assert screen.read() is first and len(reads) == 1  # nothing committed: the panel as last read
        app.bus.publish("NODE_LOST", {"node": "w1", "silent_s": 1.0})
        assert screen.read() is not first and len(reads) == 2  # an event: read again
        assert len(reads) == 2 and screen.read() is screen.read()
        clock.advance(REREAD_S)
        screen.read()
        assert len(reads) == 3  # stale: read again even without an event
