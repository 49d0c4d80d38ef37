"""`zeroloop pipeline decisions`: a table, the reason first, local times; every config key by default; --json."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zeroloop.app import App
from zeroloop.cli.main import app as cli
from zeroloop.config import load_settings
from zeroloop.store.queries import pipelines as queries

WHEN = 1_750_000_000.0


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in list(os.environ):
        if key.startswith("ZEROLOOP_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZEROLOOP_DATA_DIR", str(tmp_path / "data"))
    with App(load_settings()) as zl, zl.store.transaction() as conn:
        for key in ("connect_four_2p", "tic_tac_toe_2p"):
            queries.ensure_pipeline(conn, key, WHEN)
        queries.insert_decision(
            conn, config_key="tic_tac_toe_2p", kind="promotion", outcome="promoted",
            evidence={"model_id": "tic_tac_toe_2p-0001-abcd", "reason": "beats best 70% (p=0.97)"}, now=WHEN,
        )  # fmt: skip
        queries.insert_decision(
            conn, config_key="connect_four_2p", kind="round", outcome="abandoned",
            evidence={"job_id": 9, "job_type": "train", "error": "CUDA out of memory", "iteration": 3}, now=WHEN + 60,
        )  # fmt: skip
    return tmp_path / "data"


def _run(*args: str) -> str:
    result = CliRunner().invoke(cli, ["pipeline", "decisions", *args], env={"COLUMNS": "200"}, terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


def test_every_config_key_newest_first_with_the_reason_first_and_local_times(data_dir: Path) -> None:
    text = _run()
    header = next(line for line in text.splitlines() if "reason" in line)
    assert header.index("reason") < header.index("decision") < header.index("time")
    lines = text.splitlines()
    abandoned = next(i for i, line in enumerate(lines) if "train job 9 died: CUDA out of memory" in line)
    promoted = next(i for i, line in enumerate(lines) if "beats best 70% (p=0.97)" in line)
    assert abandoned < promoted  # newest first, across config keys
    assert dt.datetime.fromtimestamp(WHEN).strftime("%Y-%m-%d %H:%M:%S") in text
    assert "{" not in text  # no raw JSON


def test_one_config_key_json_and_an_unknown_key(data_dir: Path) -> None:
    assert "CUDA" not in _run("tic_tac_toe_2p")
    rows = json.loads(_run("tic_tac_toe_2p", "--json"))
    assert [row["evidence"]["reason"] for row in rows] == ["beats best 70% (p=0.97)"]
    result = CliRunner().invoke(cli, ["pipeline", "decisions", "go_2p"])
    assert result.exit_code != 0 and "no pipeline 'go_2p'" in str(result.exception)
