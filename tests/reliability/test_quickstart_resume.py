"""The quickstart stops cleanly on Ctrl-C and a second run resumes from the store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.reliability.test_kill_workers import TINY, kill_workers_of, workers_of
from zeroloop.errors import StoreError
from zeroloop.store.database import Store

pytestmark = pytest.mark.slow


def _samples(url: str) -> int:
    """Samples counted so far; 0 while the quickstart is still creating the store."""
    try:
        with Store(url) as store, store.read() as conn:
            value = conn.execute(sa.text("SELECT samples_total FROM pipelines")).scalar_one_or_none()
    except StoreError:  # the quickstart is still creating the store
        return 0
    return int(value or 0)


def _start(tmp_path: Path, minutes: float) -> subprocess.Popen[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ZEROLOOP_")}
    env.update({**TINY, "ZEROLOOP_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "150"})
    return subprocess.Popen(
        [sys.executable, "-m", "zeroloop", "quickstart", "--minutes", str(minutes), "--workers", "1"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.timeout(300)
def test_ctrl_c_stops_cleanly_and_the_next_run_resumes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'zeroloop.db'}"
    first = _start(tmp_path, minutes=10)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and first.poll() is None:
            if (tmp_path / "data" / "zeroloop.db").exists() and _samples(url) > 0:
                break
            time.sleep(0.5)  # polling the store for the first game batch, bounded by the deadline
        assert _samples(url) > 0, "no game batch within 120 s"
        first.send_signal(signal.SIGINT)
        output, _ = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == 0, output[-3000:]
    assert "rounds completed" in output
    before = _samples(url)
    second = _start(tmp_path, minutes=0.4)
    try:
        output, _ = second.communicate(timeout=180)
        left = workers_of(tmp_path / "data")  # a clean stop leaves no worker running
    finally:
        kill_workers_of(tmp_path / "data")  # none may outlive the test
    assert second.returncode == 0, output[-3000:]
    assert not left, [process.pid for process in left]
    assert _samples(url) > before  # the same pipeline went on, counting from where it stopped
