"""`zeroloop queue` as a user runs it: a real subprocess on the embedded store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from zeroloop.app import App
from zeroloop.config import Settings
from zeroloop.queue.jobs import JobStatus
from zeroloop.queue.manager import JobQueue

pytestmark = pytest.mark.slow


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ZEROLOOP_")}
    env.update(ZEROLOOP_DATA_DIR=str(tmp_path / "data"), COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "zeroloop", "queue", *args],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_queue_commands(settings: Settings, tmp_path: Path) -> None:
    with App(settings) as app:
        queue: JobQueue = app.queue
        dead = queue.enqueue("selfplay", "c4_2p", {"games": 8}, max_attempts=1)
        lease = queue.claim("n1")
        assert lease is not None
        queue.fail(dead.id, lease.token, "worker exploded")
        waiting = queue.enqueue("train", "c4_2p", depends_on=[dead.id])

    listed = _run(tmp_path, "ls", "--dead")
    assert listed.returncode == 0, listed.stderr
    # A job waiting on a dead job can never run: it is dead too, with the reason.
    assert "worker exploded" in listed.stdout and f"depends on job {dead.id} which is dead" in listed.stdout
    shown = _run(tmp_path, "show", str(waiting.id))
    assert shown.returncode == 0 and "depends on" in shown.stdout and str(dead.id) in shown.stdout
    stats = _run(tmp_path, "stats")
    assert stats.returncode == 0 and "selfplay" in stats.stdout and "NONE" in stats.stdout
    early = _run(tmp_path, "retry", str(waiting.id))
    assert early.returncode == 2 and f"retry job {dead.id} first" in early.stderr
    assert _run(tmp_path, "retry", str(dead.id)).returncode == 0
    assert _run(tmp_path, "retry", str(waiting.id)).returncode == 0
    assert _run(tmp_path, "cancel", str(waiting.id)).returncode == 0
    again = _run(tmp_path, "cancel", str(waiting.id))
    assert again.returncode == 2 and "cannot go from cancelled to cancelled" in again.stderr
    missing = _run(tmp_path, "show", "999")
    assert missing.returncode == 2 and "no job 999" in missing.stderr

    with App(settings) as app:
        assert app.queue.get(dead.id).status is JobStatus.QUEUED
        assert app.queue.get(waiting.id).status is JobStatus.CANCELLED
