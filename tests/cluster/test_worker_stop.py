"""A real `zeroloop worker` process stopped the ways the fleet stops it, on both backends.

One stop, one drain: the fleet marks the node terminating (its agent asks for a drain)
while the provider sends SIGTERM, and sends it again at each reconcile; the worker drains
once, releases the job in flight and exits 0, its daemons stopped, not aborted. A worker
behind `zeroloop serve` whose token is revoked exits at once with status 4 instead of
restarting its daemons forever.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.server.conftest import running_server
from zeroloop.app import App
from zeroloop.cluster.agent import EXIT_REFUSED
from zeroloop.cluster.nodes import NodeStatus
from zeroloop.config import ServerSettings, Settings, StoreSettings
from zeroloop.control.tokens import Role, Tokens
from zeroloop.pipeline import jobs
from zeroloop.queue.jobs import JobStatus
from zeroloop.store.queries import daemons as daemon_queries

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
DRAIN_DEADLINE_S = 4.0
MARK = "zeroloop-stop-test-sleeper"


def _environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    commands = tmp_path / "commands.toml"
    sleeper = f"import sys, time; sys.argv.append('{MARK}'); time.sleep(120)"
    commands.write_text(f'[selfplay]\ncommand = "{sys.executable} -c \\"{sleeper}\\" {MARK} {{output}}"\n')
    env = {key: value for key, value in os.environ.items() if not key.startswith("ZEROLOOP_")}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "ZEROLOOP_DATA_DIR": str(tmp_path / "worker-data"),
            "ZEROLOOP_CLUSTER__NODE_ID": "w1",
            "ZEROLOOP_CLUSTER__HEARTBEAT_INTERVAL_S": "0.5",
            "ZEROLOOP_WORKLOAD__KIND": "command",
            "ZEROLOOP_WORKLOAD__COMMAND_FILE": str(commands),
            "ZEROLOOP_DAEMONS__DRAIN_DEADLINE_S": str(DRAIN_DEADLINE_S),
            **extra,
        }
    )
    return env


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[object]:
    started: list[subprocess.Popen[bytes]] = []

    def start(**extra: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / "worker.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "zeroloop", "worker", "--profile", "selfplay"],
            env=_environment(tmp_path, **extra),
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    for process in psutil.process_iter(["cmdline"]):
        if MARK in (process.info["cmdline"] or []):
            process.kill()


def _wait(predicate: object, timeout_s: float, what: str, tmp_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    log = (tmp_path / "worker.log").read_text(errors="replace")[-3000:]
    raise AssertionError(f"{what} did not happen within {timeout_s} s; worker log:\n{log}")


def test_the_fleets_stop_and_the_providers_repeated_sigterm_make_one_drain(
    app: App, start_worker: object, tmp_path: Path
) -> None:
    worker = start_worker(ZEROLOOP_STORE__URL=app.settings.store_url)  # type: ignore[operator]
    job = app.queue.enqueue(jobs.SELFPLAY, "tic_tac_toe_2p", {"games": 1})
    _wait(lambda: app.queue.get(job.id).status is JobStatus.RUNNING, 90, "the job starting", tmp_path)
    app.nodes.set_status("w1", NodeStatus.TERMINATING)  # what the fleet's terminate writes...
    worker.send_signal(signal.SIGTERM)  # ...and its provider sends
    log = tmp_path / "worker.log"
    _wait(lambda: "draining daemons" in log.read_text(errors="replace"), 30, "the drain starting", tmp_path)
    worker.send_signal(signal.SIGTERM)  # asked again at the provider's next reconcile, mid-drain
    assert worker.wait(timeout=DRAIN_DEADLINE_S * 6) == 0
    released = app.queue.get(job.id)
    assert (released.status, released.attempts) == (JobStatus.QUEUED, 0)  # released in the drain, not left running
    with app.store.read() as conn:
        reasons = {row["name"]: row["health"].get("reason") for row in daemon_queries.list_daemons(conn, "w1")}
        states = {row["name"]: row["state"] for row in daemon_queries.list_daemons(conn, "w1")}
    assert set(states.values()) == {"stopped"}
    assert "aborted" not in reasons.values(), reasons
    row = app.nodes.get("w1")
    assert row is not None and row["status"] == "terminated"


def test_a_worker_whose_token_is_revoked_exits_at_once_with_status_4(
    store_url: str, start_worker: object, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path / "server-data", store=StoreSettings(url=store_url), server=ServerSettings(token_cache_s=0)
    )
    with App(settings, upgrade=False) as app, running_server(app) as url:
        tokens = Tokens(app.store)
        secret, row = tokens.create(Role.WORKER, node="w1")
        worker = start_worker(ZEROLOOP_SERVER__URL=url, ZEROLOOP_SERVER__TOKEN=secret)  # type: ignore[operator]

        def active() -> bool:
            node = app.nodes.get("w1")
            return node is not None and node["status"] == "active"

        log = tmp_path / "worker.log"
        _wait(active, 90, "the worker registering", tmp_path)
        _wait(lambda: "running on node w1" in log.read_text(errors="replace"), 60, "the worker starting", tmp_path)
        tokens.revoke(row["id"])
        began = time.monotonic()
        assert worker.wait(timeout=60) == EXIT_REFUSED
        assert time.monotonic() - began < 30  # at once: its next heartbeat, not after retries or a drain
        assert "may not take part any more" in log.read_text(errors="replace")  # said by its node agent
