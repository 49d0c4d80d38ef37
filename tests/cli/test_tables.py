"""Tables in an 80-column terminal: the columns that name a row stay whole; the least useful columns go first."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from rich.text import Text
from typer.testing import CliRunner

from zeroloop.app import App
from zeroloop.cli.main import app as cli
from zeroloop.cli.tables import Column, fitted
from zeroloop.cluster.nodes import NodeInfo
from zeroloop.config import Settings
from zeroloop.store.queries import pipelines as pipeline_queries

KEY = "chinese_checkers_3p"  # long enough that rich cut it to `chin…` in a squeezed table
NODE = "gpu-worker-eu-west-17"


@pytest.fixture
def populated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key in list(os.environ):
        if key.startswith("ZEROLOOP_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZEROLOOP_DATA_DIR", str(tmp_path / "data"))
    with App(Settings(data_dir=tmp_path / "data")) as app:
        with app.store.transaction() as conn:
            pipeline_queries.ensure_pipeline(conn, KEY, app.clock())
            pipeline_queries.add_samples(conn, KEY, 123_456, app.clock())
        model = app.models.register_candidate(
            config_key=KEY, artifact_sha256="c" * 64, parent_id=None, window_sha256=None, job_ids=[], iteration=12
        )
        app.models.promote(model.id, reason="test")
        app.nodes.register(
            NodeInfo(
                id=NODE,
                host="h",
                provider="local",
                cpu_count=64,
                memory_bytes=512 * 2**30,
                disk_bytes=2**40,
                cost_per_hour=3.25,
            )
        )
        job = app.queue.enqueue("selfplay", KEY, {"games": 8})
    return {"model": model.id, "job": str(job.id)}


@pytest.mark.parametrize(
    ("command", "whole"),
    [
        (("status",), ("config", "model", NODE)),
        (("pipeline", "ls"), ("config", "model")),
        (("nodes", "ls"), (NODE,)),
        (("models", "ls"), ("model",)),
        (("queue", "ls"), ("config", "job")),
    ],
)
def test_identifying_columns_stay_whole_in_80_columns(
    populated: dict[str, str], command: tuple[str, ...], whole: tuple[str, ...]
) -> None:
    result = CliRunner().invoke(cli, list(command), env={"COLUMNS": "80"}, terminal_width=80)
    assert result.exit_code == 0, result.output
    expected = {"config": KEY, "model": populated["model"], "job": populated["job"]}
    for name in whole:
        value = expected.get(name, name)
        assert any(value in line for line in result.output.splitlines()), (value, result.output)
    assert "…" not in result.output
    assert max(Text(line).cell_len for line in result.output.splitlines()) <= 80, result.output


def test_columns_go_in_their_order_and_the_caption_names_them() -> None:
    columns = (Column("name", key=True), Column("a", drop=2), Column("b", drop=1), Column("c"))
    rows = [["a-rather-long-identifying-name", "x" * 30, "y" * 30, "z" * 10]]
    assert [col.header for col in fitted(columns, rows, width=200).columns] == ["name", "a", "b", "c"]
    narrow = fitted(columns, rows, width=65)
    assert [col.header for col in narrow.columns] == ["name", "a", "c"]  # b (drop=1) went first
    assert narrow.caption == "a wider terminal also shows: b"
    narrower = fitted(columns, rows, width=50)
    assert [col.header for col in narrower.columns] == ["name", "c"]
    assert narrower.caption == "a wider terminal also shows: b, a"
