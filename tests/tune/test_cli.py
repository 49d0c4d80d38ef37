"""`zeroloop tune` on the command line: start, show, stop, and one-line refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zeroloop.app import App
from zeroloop.cli.main import app as cli
from zeroloop.config import load_settings
from zeroloop.errors import ZeroloopError
from zeroloop.tune.population import Population


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {
        "ZEROLOOP_DATA_DIR": str(tmp_path / "data"),
        "ZEROLOOP_TUNE__SPACE": '{"learning_rate": {"low": 0.001, "high": 0.1, "log": true}, '
        '"blocks": {"choices": [1]}, "channels": {"choices": [8]}}',
        "COLUMNS": "200",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def _run(env: dict[str, str], *args: str) -> tuple[int, str]:
    """Exit code and output; a zeroloop error as `zeroloop` itself reports it (one line, status 2)."""
    result = CliRunner().invoke(cli, list(args), env=env)
    if isinstance(result.exception, ZeroloopError):
        return 2, f"error: {result.exception}"
    return result.exit_code, result.output


def test_start_show_and_stop_a_tune(env: dict[str, str]) -> None:
    code, out = _run(env, "tune", "start", "tic_tac_toe_2p", "--variants", "2", "--budget-cpu-s", "600")
    assert code == 0 and "tune 1 of tic_tac_toe_2p: 2 variants (tic_tac_toe_2p~t1v1 ...)" in out
    code, out = _run(env, "tune", "show", "tic_tac_toe_2p")
    assert code == 0 and "no variants yet: the leader starts them" in out and "0 of 600 CPU-s" in out
    with App(load_settings()) as app:
        Population(app).tick()
    code, out = _run(env, "tune", "show", "tic_tac_toe_2p")
    assert code == 0 and "t1v1" in out and "t1v2" in out and "learning_rate" in out and "proposed" in out
    code, out = _run(env, "tune", "adopt", "tic_tac_toe_2p")
    assert code == 2 and "tune 1 of tic_tac_toe_2p has no rated variant yet" in out
    code, out = _run(env, "tune", "stop", "tic_tac_toe_2p")
    assert code == 0 and "tune 1 of tic_tac_toe_2p stopped" in out
    code, out = _run(env, "tune", "show", "tic_tac_toe_2p", "--json")
    assert code == 0 and '"status": "stopped"' in out and '"reason": "stopped by hand"' in out


def test_the_command_prints_a_refusal_as_one_line_and_exits_2(env: dict[str, str], tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "zeroloop", "tune", "show", "hex_2p"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    last = done.stderr.strip().splitlines()[-1]  # after the log line of a new store's schema
    assert done.returncode == 2 and last == "error: hex_2p has no tune: start one with zeroloop tune start hex_2p"


def test_refusals_are_one_line(env: dict[str, str]) -> None:
    code, out = _run(env, "tune", "show", "connect_four_2p")
    assert code == 2 and out.strip() == (
        "error: connect_four_2p has no tune: start one with zeroloop tune start connect_four_2p"
    )
    code, out = _run(env, "tune", "distill", "connect_four_2p", "--blocks", "1", "--channels", "8")
    assert code == 2 and "nothing to distill: connect_four_2p has no production model yet" in out
    code, out = _run(env, "tune", "stop", "connect_four_2p")
    assert code == 2 and "no tune of connect_four_2p is running" in out
