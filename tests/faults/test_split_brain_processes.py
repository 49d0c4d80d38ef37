"""Split brain with real processes: the leading coordinator is stopped (SIGSTOP) past its lease, then resumed.

Two `zeroloop coordinator` processes share the store under test. While the leader is
stopped the other takes over; when the old one resumes (or, on SQLite, is ended because
it was stopped holding the write turn), every SELFPLAY_COMPLETE event published before,
during and after must have been handled exactly once and every sample counted once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from zeroloop.cluster.leases import LEADER
from zeroloop.store.database import Store
from zeroloop.store.queries import consumers as consumer_queries
from zeroloop.store.queries import daemons as daemon_queries
from zeroloop.store.queries import leases as lease_queries
from zeroloop.store.queries import pipelines as pipeline_queries

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
CONFIG = "tic_tac_toe_2p"
SAMPLES = 3
LEASE_S = 2.0


@pytest.fixture
def coordinators(store_url: str, tmp_path: Path) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(node: str) -> subprocess.Popen[bytes]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("ZEROLOOP_")}
        env.update(
            {
                "PYTHONPATH": str(ROOT),
                "ZEROLOOP_STORE__URL": store_url,
                "ZEROLOOP_DATA_DIR": str(tmp_path / node),
                "ZEROLOOP_CLUSTER__NODE_ID": node,
                "ZEROLOOP_CLUSTER__LEADER_LEASE_S": str(LEASE_S),
                "ZEROLOOP_STORE__WRITE_TURN_MAX_S": "2",
                # PostgreSQL: a leader stopped inside a transaction loses its locks after this, as a
                # SQLite one loses its write turn; scaled to the 2 s lease like the write turn above.
                "ZEROLOOP_STORE__IDLE_IN_TRANSACTION_TIMEOUT_S": "3",
                "ZEROLOOP_DAEMONS__SUPERVISE_INTERVAL_S": "0.1",
                "ZEROLOOP_DAEMONS__HEALTH_INTERVAL_S": "0.5",
                "ZEROLOOP_DAEMONS__DRAIN_DEADLINE_S": "3",
            }
        )
        log = (tmp_path / f"{node}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "zeroloop", "coordinator"], env=env, cwd=tmp_path, stdout=log, stderr=log
        )
        log.close()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
        proc.wait(timeout=30)


def until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Wait (bounded) until `check()` holds, looking every 50 ms."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout_s} s: {what}")


def holder(store: Store) -> str:
    with store.read() as conn:
        row = lease_queries.get_lease(conn, LEADER)
    if row is None or row["holder"] is None or row["expires_at"] <= time.time():
        return ""
    return str(row["holder"])


def samples_total(store: Store) -> int:
    with store.read() as conn:
        row = pipeline_queries.get_pipeline(conn, CONFIG)
    return 0 if row is None else int(row["samples_total"])


def delivered(store: Store) -> int:
    with store.read() as conn:
        rows = consumer_queries.read_metrics(conn)
    ours = [r for r in rows if r["consumer"] == "pipeline" and r["event_type"] == "SELFPLAY_COMPLETE"]
    return sum(int(r["delivered"]) for r in ours)


def publish(store: Store, first: int, count: int) -> None:
    from zeroloop.events.bus import EventBus

    bus = EventBus(store, node="test", source="test")
    for job_id in range(first, first + count):
        payload = {"config_key": CONFIG, "job_id": job_id, "artifact_sha256": f"{job_id:064x}", "games": 1}
        bus.publish("SELFPLAY_COMPLETE", {**payload, "samples": SAMPLES})


def test_a_coordinator_resumed_after_its_lease_changes_nothing_twice(
    store: Store, coordinators: Callable[[str], subprocess.Popen[bytes]]
) -> None:
    a = coordinators("a")
    until(lambda: holder(store).startswith("a/"), 60, "a leads")
    b = coordinators("b")
    publish(store, 1, 3)
    until(lambda: samples_total(store) == 3 * SAMPLES, 30, "a handles the first events")

    def b_standing_by() -> bool:
        with store.read() as conn:
            return any(row["name"] == "pipeline" for row in daemon_queries.list_daemons(conn, "b"))

    until(b_standing_by, 60, "b is up and standing by")
    a.send_signal(signal.SIGSTOP)
    until(lambda: holder(store).startswith("b/"), 30, "b takes over")
    publish(store, 4, 3)
    until(lambda: samples_total(store) == 6 * SAMPLES, 30, "b handles the events of the pause")
    a.send_signal(signal.SIGCONT)
    publish(store, 7, 3)
    until(lambda: samples_total(store) == 9 * SAMPLES, 30, "the events after the resume are handled")

    def a_stood_down() -> bool:
        if a.poll() is not None:
            return True  # SQLite: ended for holding the write turn while stopped
        with store.read() as conn:
            rows = daemon_queries.list_daemons(conn, "a")
        return any(row["name"] == "pipeline" and row["state"] == "standby" for row in rows)

    until(a_stood_down, 30, "a stands down")
    assert holder(store).startswith("b/")
    assert b.poll() is None
    assert samples_total(store) == 9 * SAMPLES
    assert delivered(store) == 9
