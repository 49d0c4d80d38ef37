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


@pytest.mark.slow
def test_a_leader_stopped_inside_a_transaction_holds_its_successor_no_longer_than_its_lease(
    pg_url: str, tmp_path: Path
) -> None:
    # The leader stops (SIGSTOP) holding the lease row locked in an open transaction. PostgreSQL would
    # end that session only after idle_in_transaction_session_timeout (15 s, ten leases here); the
    # successor ends it itself once the lease has run out, and takes over within one lease.
    with Store(pg_url) as store:
        a = Child(pg_url, "a", tmp_path)
        b: Child | None = None
        try:
            a.wait_for(lambda line: line == "TICK 1", timeout=30)
            b = Child(pg_url, "b", tmp_path)
            b.wait_for(lambda line: line == "TICK None", timeout=30)
            Path(f"{a.pause_file}-in-transaction").touch()
            a.wait_for(lambda line: line == "PAUSED IN TRANSACTION", timeout=10)
            with store.read() as conn:  # the committed lease: the end of a's last renewal
                expires_at = float(lease_queries.get_lease(conn, LEADER)["expires_at"])  # type: ignore[index]
            _poll(lambda: _holder(store)[0] == "b", timeout=TTL_S * 10)
            late_s = time.time() - expires_at
            # b looks every TTL_S / 10 and waits at most a moment for the ended session to let go.
            assert late_s <= TTL_S / 10 + 1.0, late_s
            b.wait_for(lambda line: line == "WROTE 2", timeout=10)
            a.process.send_signal(signal.SIGCONT)
            woke = a.wait_for(lambda line: line.startswith(("WROTE", "REFUSED", "FAILED")), timeout=10)
            assert woke == "FAILED 1"  # its transaction did not commit: the session was ended
            a.wait_for(lambda line: line == "TICK None", timeout=10)
            assert _holder(store)[:2] == ("b", 2)
        finally:
            a.stop()
            if b is not None:
                b.stop()


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A migrated PostgreSQL database (skips without a server, fails under CI=true)."""
    from tests.conftest import fresh_postgres_url, postgres_admin_url

    postgres_admin_url()
    yield from fresh_postgres_url(request.getfixturevalue("_pg_template"))
