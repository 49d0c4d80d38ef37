"""`zeroloop serve --processes N`: N server processes on one port, each built from the same settings."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import psutil
import pytest

from tests.server.test_netns_worker import Proc, _free_port, _zeroloop


@pytest.mark.timeout(180)
def test_two_server_processes_share_the_port_and_the_loopback_trust(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ZEROLOOP_")}
    # The settings say 0.0.0.0; --host says loopback: every process must go by --host.
    env.update({"ZEROLOOP_DATA_DIR": str(tmp_path / "data"), "ZEROLOOP_SERVER__HOST": "0.0.0.0"})
    port = _free_port("127.0.0.1")
    argv = _zeroloop("serve", "--host", "127.0.0.1", "--port", str(port), "--processes", "2")
    server = Proc("server", argv, env, tmp_path)
    try:
        server.wait_for("Uvicorn running on", 60)
        server.wait_for("Application startup complete", 60)
        base = f"http://127.0.0.1:{port}/api/v1/worker/w1"
        for _ in range(20):  # bounded: each new connection lands on either process
            with httpx.Client(timeout=30) as client:
                answer = client.post(f"{base}/jobs/claim", json={})
            assert answer.status_code == 200, answer.text  # on loopback with no token: the local trust
            assert answer.json() == {"lease": None}
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=30).status_code == 200
        # One process answered, so the supervisor had started them all.
        children = psutil.Process(server.proc.pid).children()
        spawned = [child for child in children if "spawn_main" in " ".join(child.cmdline())]
        assert len(spawned) == 2, [child.cmdline() for child in children]
    finally:
        code = server.stop()
    assert code == 0, server.tail()
    _gone, alive = psutil.wait_procs(spawned, timeout=30)
    assert not alive, "server processes outlived their supervisor's clean stop"
