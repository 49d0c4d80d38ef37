"""Logs: files and pipes get plain or JSON lines (never a terminal render), files rotate by size."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from rich.console import Console
from rich.logging import RichHandler

from tests.fleet.providers.contract import wait_until
from zeroloop import logs, tracing
from zeroloop.cli.quickstart import logs_through
from zeroloop.config import LogSettings, PoolSettings, Settings, TracingSettings
from zeroloop.errors import ConfigError
from zeroloop.fleet.providers.base import LaunchSpec
from zeroloop.fleet.providers.local import LocalProvider

PLAIN = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: ")
LONG = " ".join(["a message longer than any terminal is wide"] * 6)


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """A private logger, its handlers removed and closed after the test."""
    chosen = logging.getLogger("zeroloop.test_logs")
    chosen.propagate = False
    chosen.setLevel(logging.DEBUG)
    try:
        yield chosen
    finally:
        for handler in list(chosen.handlers):
            chosen.removeHandler(handler)
            handler.close()
        chosen.propagate = True


def _write_some(logger: logging.Logger, handler: logging.Handler) -> None:
    logger.addHandler(handler)
    logger.info("short")
    logger.warning(LONG)
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("it failed")


def _assert_plain(text: str) -> None:
    assert "\x1b[" not in text  # no colours or cursor moves
    lines = text.splitlines()
    assert all(line == line.rstrip() for line in lines)  # nothing padded to a screen width
    records = [line for line in lines if PLAIN.match(line)]
    assert [line.split(": ", 1)[1] for line in records] == ["short", LONG, "it failed"]
    assert "ValueError: boom" in text


def test_a_log_file_holds_plain_lines_never_a_terminal_render(tmp_path: Path, logger: logging.Logger) -> None:
    path = tmp_path / "logs" / "w1.log"
    _write_some(logger, logs.handler(LogSettings(file=path), Console(force_terminal=True, width=60)))
    _assert_plain(path.read_text())


def test_stderr_that_is_no_terminal_gets_plain_lines(logger: logging.Logger) -> None:
    out = io.StringIO()
    _write_some(logger, logs.handler(LogSettings(), Console(file=out, width=60)))
    _assert_plain(out.getvalue())


def test_a_terminal_gets_rich_lines_unless_json_is_asked_for() -> None:
    terminal = Console(file=io.StringIO(), force_terminal=True)
    assert isinstance(logs.handler(LogSettings(), terminal), RichHandler)
    assert isinstance(logs.handler(LogSettings(format="json"), terminal).formatter, logs.JsonFormatter)


def test_json_lines_parse_one_by_one_and_name_the_span_they_were_logged_in(
    tmp_path: Path, logger: logging.Logger, settings: Settings
) -> None:
    path = tmp_path / "w1.log"
    logger.addHandler(logs.handler(LogSettings(file=path, format="json"), Console()))
    tracing.setup(settings, exporter=InMemorySpanExporter())
    try:
        with tracing.span("job selfplay") as opened:
            logger.info("inside\nover two lines")
    finally:
        tracing.shutdown()
    _write_some(logger, logging.NullHandler())
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [record["message"] for record in records] == ["inside\nover two lines", "short", LONG, "it failed"]
    inside = records[0]
    context = opened.get_span_context()
    assert (inside["trace_id"], inside["span_id"]) == (
        format(context.trace_id, "032x"),
        format(context.span_id, "016x"),
    )
    assert inside["level"] == "INFO" and inside["logger"] == "zeroloop.test_logs"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", inside["time"])
    assert "trace_id" not in records[1]  # outside any span
    assert "ValueError: boom" in records[3]["exception"]


def test_the_file_rotates_at_its_size_limit_keeping_the_backups(tmp_path: Path, logger: logging.Logger) -> None:
    path = tmp_path / "w1.log"
    logger.addHandler(logs.handler(LogSettings(file=path, max_bytes=1024, backups=2), Console()))
    for number in range(60):  # about 6 KiB of lines
        logger.info("record %03d %s", number, "x" * 60)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w1.log", "w1.log.1", "w1.log.2"]
    assert all(p.stat().st_size <= 1024 for p in tmp_path.iterdir())
    assert "record 059" in path.read_text()  # the newest records are in the file itself


def test_a_log_file_that_cannot_be_opened_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file, not a directory")
    with pytest.raises(ConfigError, match=r"cannot open the log file .*fix logs\.file"):
        logs.handler(LogSettings(file=tmp_path / "taken" / "w1.log"), Console())


def test_configure_sets_the_root_handler_and_quiets_chatty_libraries(tmp_path: Path, settings: Settings) -> None:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    try:
        chosen = settings.model_copy(update={"logs": LogSettings(file=tmp_path / "d.log"), "log_level": "DEBUG"})
        logs.configure(chosen, Console())
        assert [type(handler).__name__ for handler in root.handlers] == ["RotatingFileHandler"]
        assert root.level == logging.DEBUG
        assert logging.getLogger("alembic").level == logging.WARNING
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers, root.level = saved, level


def test_the_quickstart_prints_held_records_plainly_when_its_console_is_no_terminal() -> None:
    out = io.StringIO()
    root = logging.getLogger()
    with logs_through(Console(file=out, width=40)) as print_logs:
        root.warning(LONG)
        print_logs()
    assert "\x1b[" not in out.getvalue() and PLAIN.match(out.getvalue())
    assert out.getvalue().rstrip("\n").endswith(LONG)


def test_the_quickstart_leaves_records_to_the_log_file_when_one_is_set(tmp_path: Path) -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    with logs_through(Console(file=io.StringIO()), LogSettings(file=tmp_path / "q.log")):
        assert root.handlers == before


def test_a_local_worker_is_told_its_log_file_and_its_stray_output_goes_beside_it(tmp_path: Path) -> None:
    provider = LocalProvider("local", PoolSettings(kind="local", options={"kill_after_s": 0}), data_dir=tmp_path)
    script = "import os; print(os.environ['ZEROLOOP_LOGS__FILE'], flush=True)"
    spec = LaunchSpec(node_id="w7", argv=(sys.executable, "-c", script), env={}, pool="local", profile="selfplay")
    launched = provider.launch(spec)
    out = tmp_path / "logs" / "w7.out"
    try:
        assert wait_until(lambda: out.exists() and out.read_text().endswith("\n"), 10)
    finally:
        provider.kill(launched.provider_id)
    assert out.read_text().strip() == str(tmp_path / "logs" / "w7.log")


def test_relative_log_and_trace_files_are_made_absolute(settings: Settings) -> None:
    assert LogSettings(file=Path("w1.log")).file == Path.cwd() / "w1.log"
    assert TracingSettings(file=Path("~/t.jsonl")).file == Path.home() / "t.jsonl"
