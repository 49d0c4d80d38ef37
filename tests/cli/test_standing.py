"""Ratings a user can read: why production is production when another model outrates it, on every screen.

The store holds the history of tests/server/history.py: round 2's model was promoted by the
non-inferiority gate (it drew round 1's model evenly) but did worse against random, so the
archived round-1 model rates above production, the case issue 26 found puzzling.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from tests.helpers import FakeClock
from tests.server.history import KEY, START, History, make_history
from zeroloop.app import App
from zeroloop.cli.main import app as cli
from zeroloop.cli.quickstart import render, snapshot, summary
from zeroloop.config import load_settings


@pytest.fixture
def made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[App, History]]:
    for key in list(os.environ):
        if key.startswith("ZEROLOOP_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZEROLOOP_DATA_DIR", str(tmp_path / "data"))
    clock = FakeClock(START)
    with App(load_settings(), clock=clock) as app:
        yield app, make_history(app, clock)


def _run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), env={"COLUMNS": "200"}, terminal_width=200)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())  # rich wraps long lines: compare the words


def test_models_ls_notes_a_production_model_another_outrates_and_show_says_why(made: tuple[App, History]) -> None:
    _app, history = made
    first, second, _third = history.models
    listed = _run("models", "ls")
    assert f"{KEY}: production {second} rates below {first} (archived) by" in listed
    assert "production is the newest model that passed the promotion gate, not the highest rated" in listed
    assert f"zeroloop models show {second}" in listed
    shown = _run("models", "show", second)
    assert "why it is production" in shown
    assert f"{second} is production because the promotion gate accepted it: against {first} it won 3, drew 15" in shown
    assert f"{first} (archived) rates +" in shown and "the regression watchdog rolls back to" in shown
    assert "why it is production" not in _run("models", "show", first)  # archived: nothing to explain


def test_the_quickstart_says_why_production_is_production_and_what_its_rating_rests_on(
    made: tuple[App, History],
) -> None:
    app, history = made
    first, second, _third = history.models
    console = Console(record=True, width=240)
    panel = snapshot(app, KEY)
    console.print(render(panel, KEY, 60.0, 10.0, (2, 0)))
    drawn = console.export_text()
    games_then = panel.rating(second).games
    assert f"{second}, Elo" in drawn and f"fitted from {games_then:.0f} games" in drawn
    assert f"the newest model the gate passed; {first} (archived) rates +" in drawn
    # A tournament pairing finishes during the drain: the joint fit moves, and the summary says on what it rests.
    app.models.record_match(
        config_key=KEY, model_id=second, opponent="random", wins=19, draws=1, losses=0, elo_diff=0.0, elo_ci=0.0,
        job_id=None,
    )  # fmt: skip
    final = snapshot(app, KEY)
    assert final.rating(second).elo != panel.rating(second).elo
    console.print(summary(final, KEY, 600.0))
    text = console.export_text()
    assert f"joint fit of {final.rating(second).games:.0f} games, refitted with every match recorded" in text
    assert final.rating(second).games != games_then and "when promoted" in text
