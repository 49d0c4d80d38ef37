"""The SQLite write turn is bounded: a writer stopped inside its transaction loses it; a busy one is waited for.

A real process takes the turn and writes a row; this test then writes with
`store.write_turn_max_s` = 1 s. A holder that stopped itself (SIGSTOP) must be ended, its
row never committed, and our write must go through; a holder that is merely slow (running)
must be waited for and commit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from zeroloop.config import StoreSettings
from zeroloop.store import migrate
from zeroloop.store.database import Store
from zeroloop.store.queries import daemons as daemon_queries

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
HOLDER = Path(__file__).with_name("turn_holder.py")
MAX_HOLD_S = 1.0


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with Store(url) as store:
        migrate.upgrade(store)
    return url


@pytest.fixture
def holders() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def hold(url: str, mode: str, seconds: float, holders: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    """Start a holder and return once it is inside its transaction."""
    proc = subprocess.Popen(
        [sys.executable, str(HOLDER), url, mode, str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    holders.append(proc)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "HOLDING"
    return proc


def write(url: str) -> float:
    """Write one row with the bounded turn; return the seconds it took."""
    began = time.monotonic()
    with Store(url, StoreSettings(write_turn_max_s=MAX_HOLD_S)) as store, store.transaction() as conn:
        row = {"node": "waiter", "name": "waiter", "state": "running", "restarts": 0}
        daemon_queries.upsert_daemon(
            conn, {**row, "last_error": None, "health": {}, "started_at": None, "updated_at": 0}
        )
    return time.monotonic() - began


def nodes(url: str) -> set[str]:
    with Store(url) as store, store.read() as conn:
        return {row["node"] for row in daemon_queries.list_daemons(conn)}


def test_a_writer_stopped_inside_its_transaction_loses_the_turn(
    sqlite_url: str, holders: list[subprocess.Popen[str]]
) -> None:
    stopped = hold(sqlite_url, "stop", 0, holders)
    took_s = write(sqlite_url)
    assert MAX_HOLD_S <= took_s < MAX_HOLD_S + 10
    assert stopped.wait(timeout=10) == -9  # killed: its transaction never committed
    assert nodes(sqlite_url) == {"waiter"}


def test_a_running_writer_that_overstays_is_waited_for(sqlite_url: str, holders: list[subprocess.Popen[str]]) -> None:
    slow = hold(sqlite_url, "sleep", 3 * MAX_HOLD_S, holders)
    took_s = write(sqlite_url)
    assert took_s >= 2 * MAX_HOLD_S
    assert slow.wait(timeout=10) == 0
    assert nodes(sqlite_url) == {"holder", "waiter"}
