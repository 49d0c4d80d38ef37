"""Leader failover between two real coordinator processes, on both backends.

Each child (lease_child.py) elects itself with a short lease and writes under its token.
SIGKILL of the leader: the other must lead within one lease period. SIGSTOP of the
leader past its lease, then SIGCONT: its next write, under the old token, is refused.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from zeroloop.cluster.leases import LEADER
from zeroloop.store.database import Store
from zeroloop.store.queries import leases as lease_queries

TTL_S = 1.5
CHILD = Path(__file__).with_name("lease_child.py")
ROOT = Path(__file__).parents[2]


class Child:
    """A child process whose stdout lines are collected by a thread, so waiting never blocks forever."""

    def __init__(self, store_url: str, holder: str, workdir: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.pause_file = workdir / f"pause-{holder}"
        self.process = subprocess.Popen(
            [sys.executable, str(CHILD), store_url, holder, str(TTL_S), str(self.pause_file)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        try:
            for line in self.process.stdout:
                self.lines.put(line.strip())
        except ValueError:
            return  # the pipe was closed by stop()

    def wait_for(self, predicate: Callable[[str], bool], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(line)
            if predicate(line):
                return line
        raise AssertionError(f"no matching line within {timeout} s; saw the last: {self.seen[-10:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
        self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def children(store_url: str, tmp_path: Path) -> Iterator[Callable[[str], Child]]:
    started: list[Child] = []

    def start(holder: str) -> Child:
        child = Child(store_url, holder, tmp_path)
        started.append(child)
        return child

    yield start
    for child in started:
        child.stop()


def _holder(store: Store) -> tuple[str | None, int, float]:
    with store.read() as conn:
        row = lease_queries.get_lease(conn, LEADER)
    if row is None or row["holder"] is None or row["expires_at"] <= time.time():
        return None, 0 if row is None else int(row["token"]), 0.0
    return row["holder"], int(row["token"]), float(row["expires_at"])


def _poll(check: Callable[[], bool], timeout: float) -> float:
    """Poll `check` until it holds; return the seconds it took (bounded by `timeout`)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout} s")


@pytest.mark.slow
def test_the_follower_leads_within_one_lease_period_after_sigkill(
    store: Store, children: Callable[[str], Child]
) -> None:
    a = children("a")
    a.wait_for(lambda line: line == "TICK 1", timeout=30)
    b = children("b")
    b.wait_for(lambda line: line == "TICK None", timeout=30)
    a.process.kill()
    a.process.wait(timeout=10)
    killed_at = time.monotonic()
    _poll(lambda: _holder(store)[0] == "b", timeout=TTL_S * 4)
    elapsed = time.monotonic() - killed_at
    # The lease ran at most TTL_S past a's last renewal; b looks every TTL_S / 10.
    assert elapsed <= TTL_S + TTL_S / 10 + 0.5, elapsed
    assert _holder(store)[1] == 2
    b.wait_for(lambda line: line == "WROTE 2", timeout=10)


@pytest.mark.slow
def test_a_paused_leader_cannot_write_after_it_resumes(store: Store, children: Callable[[str], Child]) -> None:
    a = children("a")
    a.wait_for(lambda line: line == "TICK 1", timeout=30)
    b = children("b")
    b.wait_for(lambda line: line == "TICK None", timeout=30)
    a.pause_file.touch()  # a stops itself (SIGSTOP) right after its next renewal, outside any transaction
    a.wait_for(lambda line: line == "PAUSED", timeout=10)
    _poll(lambda: _holder(store)[0] == "b", timeout=TTL_S * 4)
    b.wait_for(lambda line: line == "WROTE 2", timeout=10)
    a.process.send_signal(signal.SIGCONT)
    first_after = a.wait_for(lambda line: line.startswith(("WROTE", "REFUSED")), timeout=10)
    assert first_after == "REFUSED 1"
    a.wait_for(lambda line: line == "TICK None", timeout=10)  # and it knows it is a follower now
    assert _holder(store)[:2] == ("b", 2)
