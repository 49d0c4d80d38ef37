"""The quickstart in a real terminal (tmux): one live panel, log lines above it, a clean drain.

Rich's live display can only be judged on a terminal: a pipe shows no cursor movement. The
quickstart runs in a private tmux server (its own socket, so no user session is touched);
the pane's whole scrollback is read once the command has finished.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.reliability.test_kill_workers import TINY

pytestmark = pytest.mark.slow
TITLE = "zeroloop quickstart: tic_tac_toe_2p"


def _tmux(socket: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.timeout(300)
@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux to give the quickstart a real terminal")
def test_the_quickstart_draws_one_panel_and_keeps_its_log_lines(tmp_path: Path) -> None:
    socket = f"zeroloop-test-{uuid.uuid4().hex[:12]}"
    config = tmp_path / "tmux.conf"
    config.write_text("set -g remain-on-exit on\nset -g history-limit 10000\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("ZEROLOOP_")}
    env.update({**TINY, "ZEROLOOP_DATA_DIR": str(tmp_path / "data"), "ZEROLOOP_DAEMONS__DRAIN_DEADLINE_S": "5"})
    assignments = " ".join(f"{key}={shlex.quote(value)}" for key, value in env.items() if key.isidentifier())
    quickstart = f"{shlex.quote(sys.executable)} -m zeroloop quickstart --minutes 0.5 --workers 1"
    done = f"tmux -L {socket} wait-for -S done"
    command = f"cd {shlex.quote(str(tmp_path))} && env -i {assignments} {quickstart}; echo exit=$?; {done}"
    started = _tmux(socket, "-f", str(config), "new-session", "-d", "-s", "q", "-x", "120", "-y", "40", command)
    assert started.returncode == 0, started.stderr
    try:
        _tmux(socket, "wait-for", "done", timeout=240)
        screen = _tmux(socket, "capture-pane", "-p", "-J", "-S", "-", "-t", "q").stdout
    finally:
        _tmux(socket, "kill-server")
    lines = screen.splitlines()
    assert "exit=0" in screen, screen
    assert sum(TITLE in line for line in lines) == 1, screen  # no stale copies of the panel
    assert sum(line.startswith("│ time") for line in lines) == 1, screen
    title = next(index for index, line in enumerate(lines) if TITLE in line)
    stopping = next(index for index, line in enumerate(lines) if line.startswith("stopping:"))
    assert title < stopping and "rounds completed" in screen
    # The log lines of the run stay on screen, above the panel (the store is created first thing).
    assert any("INFO" in line for line in lines[:title]), screen
    # Each log line carries one level prefix (the first lines once read `INFO INFO:zeroloop...`).
    doubled = re.compile(r"\b(DEBUG|INFO|WARNING|ERROR)[ :]+(DEBUG|INFO|WARNING|ERROR)\b")
    assert not [line for line in lines if doubled.search(line)], screen
    logs = tmp_path / "data" / "logs"
    assert not [p for p in logs.iterdir() if "leaked" in p.read_text()], "a worker was cut short"
