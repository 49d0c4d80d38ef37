"""A user command's output takes bounded memory and log, however much it prints."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from zeroloop.errors import WorkloadError
from zeroloop.workload.command import run_command
from zeroloop.workload.output import CommandOutput

LOG = logging.getLogger("tests.command_output")


def test_one_huge_line_keeps_only_the_tail_and_logs_a_cut_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOG.name)
    output = CommandOutput("job", LOG, tail_bytes=1000, line_chars=50)
    for _ in range(200):  # 10 MB on one line, in chunks
        output.feed(b"x" * 50_000)
        assert len(output._tail) <= 1000 and len(output._line) <= 50
    output.feed(b"END\n")
    output.finish()
    assert output.total_bytes == 10_000_004 and output.dropped_bytes == 10_000_004 - 1000
    assert output.tail_text().startswith(f"[... {10_000_004 - 1000} earlier bytes dropped ...]\n")
    logged = [record.getMessage() for record in caplog.records]
    assert logged == [f"job | {'x' * 50} [... {10_000_003 - 50} more bytes on this line not logged]"]
    assert len(output.summary()) < 400


def test_a_million_lines_log_only_the_first_ones_and_say_how_many_were_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOG.name)
    output = CommandOutput("job", LOG, log_lines=100)
    output.feed(b"line\n" * 1_000_000)
    output.finish()
    logged = [record.getMessage() for record in caplog.records]
    assert len(logged) == 102
    assert logged[100] == "job | [100 lines logged; the rest is not logged]"
    assert logged[101] == "job | [output ended: 1000000 lines, 5000000 bytes; 999900 lines were not logged]"
    assert output.summary(lines=2) == "line / line"


def test_a_failing_command_that_floods_its_output_reports_a_short_tail(tmp_path: Path) -> None:
    code = "import sys; sys.stdout.write('a' * 3_000_000 + '\\nlast words\\n'); sys.exit(4)"
    with pytest.raises(WorkloadError, match=r"exited with status 4; last output: \[\.\.\. \d+ earlier bytes") as raised:
        run_command([sys.executable, "-c", code], 60, None, "selfplay x")
    assert str(raised.value).endswith("last words") and len(str(raised.value)) < 1000
