"""`zeroloop events` and `zeroloop dlq` as a user runs them, on both backends."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.events.conftest import no_sleep, node_lost
from zeroloop.config import EventSettings
from zeroloop.events.bus import Event, EventBus
from zeroloop.events.consumer import ConsumerSpec
from zeroloop.events.runner import ConsumerRunner
from zeroloop.store.database import Store
from zeroloop.store.queries import consumers as consumer_queries

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(store_url: str, tmp_path: Path) -> dict[str, str]:
    """A CLI environment pointing at the store under test."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("ZEROLOOP_")}
    return {**clean, "ZEROLOOP_DATA_DIR": str(tmp_path / "data"), "ZEROLOOP_STORE__URL": store_url, "COLUMNS": "200"}


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zeroloop", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _fail(event: Event) -> None:
    raise RuntimeError("handler is broken")


def test_tail_replay_stats_and_dlq(store_url: str, env: dict[str, str]) -> None:
    with Store(store_url) as store:
        bus = EventBus(store, node="n1", source="test")
        ids = [bus.publish("NODE_LOST", node_lost(f"node{i}")) for i in range(3)]
        bus.publish("PIPELINE_PAUSED", {"config_key": "hex_2p", "reason": "because"})
        settings = EventSettings(max_attempts=1, retry_initial_s=0)
        asyncio.run(ConsumerRunner(bus, [ConsumerSpec("c", _fail)], settings, sleep=no_sleep).run_until_idle())

        tail = _cli(env, "events", "tail", "--type", "NODE_LOST")
        assert tail.returncode == 0, tail.stderr
        assert [line.split()[0] for line in tail.stdout.splitlines()] == [str(i) for i in ids]
        assert "hex_2p" in _cli(env, "events", "tail", "--config", "hex_2p").stdout

        stats = _cli(env, "events", "stats")
        assert stats.returncode == 0 and "NODE_LOST" in stats.stdout and "pending: 4" in stats.stdout

        listed = _cli(env, "dlq", "ls")
        assert listed.returncode == 0 and "handler is broken" in listed.stdout
        shown = _cli(env, "dlq", "show", "1")
        assert shown.returncode == 0 and "Traceback" in shown.stdout and "NODE_LOST" in shown.stdout
        assert _cli(env, "dlq", "drop", "1").returncode == 0
        refused = _cli(env, "dlq", "drop", "1")
        assert refused.returncode == 2 and "cannot go from dropped" in refused.stderr
        assert "pending, due now" in _cli(env, "dlq", "retry", "2").stdout

        replay = _cli(env, "events", "replay", "--consumer", "c", "--from", str(ids[1]))
        assert replay.returncode == 0, replay.stderr
        with store.read() as conn:
            cursor = consumer_queries.get_cursor(conn, "c")
        assert cursor is not None and cursor[1] == ids[1] - 1
        missing = _cli(env, "events", "replay", "--consumer", "nobody", "--from", "1")
        assert missing.returncode == 2 and "no consumer named 'nobody'" in missing.stderr
        assert _cli(env, "events", "forget", "--consumer", "c").returncode == 0


def test_tail_follow_prints_new_events_and_stops_on_ctrl_c(store_url: str, env: dict[str, str]) -> None:
    with Store(store_url) as store:
        bus = EventBus(store, node="n1", source="test")
        with subprocess.Popen(
            [sys.executable, "-m", "zeroloop", "events", "tail", "--follow"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as child:
            try:
                assert child.stdout is not None and child.stderr is not None
                bus.publish("NODE_LOST", node_lost("first"))
                deadline = time.monotonic() + 60
                line = ""
                while "first" not in line and time.monotonic() < deadline:
                    line = child.stdout.readline()  # blocks until the follower prints; bounded by its output
                    if not line and child.poll() is not None:
                        break
                assert "first" in line
                child.send_signal(signal.SIGINT)
                assert child.wait(timeout=30) == 0
                assert "Traceback" not in child.stderr.read()
            finally:
                if child.poll() is None:
                    child.kill()
