"""A consumer process killed with SIGKILL mid-stream, restarted, handles every event at least once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.events.conftest import node_lost
from zeroloop.events.bus import EventBus
from zeroloop.store.database import Store
from zeroloop.store.queries import consumers as consumer_queries
from zeroloop.store.queries import events as queries

ROOT = Path(__file__).resolve().parents[2]


def _child(url: str, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "tests.events.consumer_child", url, str(out)], cwd=ROOT)


def _handled(out: Path) -> list[int]:
    return [int(line) for line in out.read_text().split()] if out.exists() else []


def test_sigkilled_consumer_resumes_without_skipping(store_url: str, tmp_path: Path) -> None:
    out = tmp_path / "handled.txt"
    with Store(store_url) as store:
        bus = EventBus(store, node="n", source="t")
        published = bus.publish_many([("NODE_LOST", node_lost(str(i))) for i in range(400)])
        child = _child(store_url, out)
        deadline = time.monotonic() + 60
        while len(_handled(out)) < 60 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)  # polling a condition in another process, bounded by the deadline
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        killed_at = len(_handled(out))
        with store.read() as conn:
            cursor = consumer_queries.get_cursor(conn, "crashy")
        assert cursor is not None and cursor[1] <= published[killed_at - 1]  # never past what was handled
        restarted = _child(store_url, out)
        assert restarted.wait(timeout=120) == 0
        handled = _handled(out)
        assert set(handled) == set(published)  # at least once each
        with store.read() as conn:
            assert consumer_queries.get_cursor(conn, "crashy") == queries.high_water(conn, limit_horizon=None)
