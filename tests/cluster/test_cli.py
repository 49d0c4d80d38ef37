"""The real `zeroloop` commands of this part in subprocesses: run and drain on SIGTERM, status, health."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zeroloop.app import daemon_table as default_registry
from zeroloop.cluster.nodes import NodeInfo, Nodes
from zeroloop.events.bus import EventBus
from zeroloop.store.database import Store
from zeroloop.store.queries import daemons as daemon_queries

OURS = sorted(spec.name for spec in default_registry().for_profile("full"))  # every daemon `run` starts


def _env(tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ZEROLOOP_")}
    env.update(
        {
            "ZEROLOOP_DATA_DIR": str(tmp_path / "data"),
            "ZEROLOOP_CLUSTER__NODE_ID": "cli-node",
            "ZEROLOOP_CLUSTER__LEADER_LEASE_S": "1.5",
            "ZEROLOOP_DAEMONS__HEALTH_INTERVAL_S": "0.5",
            "COLUMNS": "200",
        }
    )
    return env


def _zeroloop(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zeroloop", *args],
        env=_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _states(url: str) -> dict[str, str]:
    with Store(url) as store, store.read() as conn:
        return {row["name"]: row["state"] for row in daemon_queries.list_daemons(conn, "cli-node")}


@pytest.mark.slow
def test_run_starts_every_daemon_and_drains_on_sigterm(tmp_path: Path) -> None:
    # Nothing runs yet: no leader, so the check fails (and creates the store).
    idle = _zeroloop(tmp_path, "health", "--check")
    assert idle.returncode == 1 and "no process holds the leader lease" in idle.stdout
    url = f"sqlite:///{tmp_path / 'data' / 'zeroloop.db'}"
    log_path = tmp_path / "run.log"
    with log_path.open("w") as log:
        # Output goes to a file: a pipe nobody reads while waiting could fill and block the child.
        process = subprocess.Popen(
            [sys.executable, "-m", "zeroloop", "run"],
            env=_env(tmp_path),
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and process.poll() is None:
                if all(_states(url).get(name) == "running" for name in OURS):
                    break
                time.sleep(0.1)
            else:
                raise AssertionError(f"daemons did not all run: {_states(url)}\n{log_path.read_text()[-3000:]}")
            running = _zeroloop(tmp_path, "health", "--check")
            assert running.returncode == 0, running.stdout
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    output = log_path.read_text()
    assert process.returncode == 0, output
    assert "draining daemons" in output
    assert {name: _states(url)[name] for name in OURS} == dict.fromkeys(OURS, "stopped")
    listed = _zeroloop(tmp_path, "daemons", "ls")  # the node stopped cleanly: it ended, its daemons are history
    assert listed.returncode == 0
    assert "queue_reaper" not in listed.stdout and "of ended nodes not shown (--all shows them)" in listed.stdout
    listed = _zeroloop(tmp_path, "daemons", "ls", "--all")
    assert listed.returncode == 0
    assert "queue_reaper" in listed.stdout
    status = _zeroloop(tmp_path, "status")  # the stopped node's rows are history: status says so, not lists them
    assert status.returncode == 0
    assert "cli-node" not in status.stdout and "of ended nodes not shown" in " ".join(status.stdout.split())
    stopped = _zeroloop(tmp_path, "health", "--check")
    assert stopped.returncode == 1 and "leader" in stopped.stdout
    drained = _zeroloop(tmp_path, "nodes", "drain", "ghost")
    assert drained.returncode == 2
    assert "no node 'ghost'" in drained.stderr
    # A clean stop left the cluster: the node is terminated, not waiting to be found lost.
    assert "terminated" in _zeroloop(tmp_path, "nodes", "ls", "--all").stdout
    refused = _zeroloop(tmp_path, "nodes", "drain", "cli-node")
    assert refused.returncode == 2 and "terminated -> draining" in refused.stderr
    with Store(url) as store:  # a live node, registered as its agent would
        Nodes(store, EventBus(store, node="test", source="test")).register(
            NodeInfo("live-node", "host", "local", 2, 2**30, 2**30)
        )
    assert _zeroloop(tmp_path, "nodes", "drain", "live-node").returncode == 0
    assert _zeroloop(tmp_path, "nodes", "undrain", "live-node").returncode == 0
