"""`zeroloop serve --processes N`: N server processes on one port, each built from the same settings, that come up
however slowly the machine lets them and stop promptly."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.server.test_netns_worker import Proc, _free_port, _zeroloop
from zeroloop.server.serve import STOP_GRACE_S


def _server(tmp_path: Path, port: int) -> Proc:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ZEROLOOP_")}
    # The settings say 0.0.0.0; --host says loopback: every process must go by --host.
    env.update({"ZEROLOOP_DATA_DIR": str(tmp_path / "data"), "ZEROLOOP_SERVER__HOST": "0.0.0.0"})
    argv = _zeroloop("serve", "--host", "127.0.0.1", "--port", str(port), "--processes", "2")
    return Proc("server", argv, env, tmp_path)


def _spawned(server: Proc, count: int, timeout_s: float) -> list[psutil.Process]:
    """The server processes the supervisor started, once there are `count` (bounded wait on a real condition)."""
    deadline = time.monotonic() + timeout_s
    while True:
        children = psutil.Process(server.proc.pid).children()
        spawned = [child for child in children if "spawn_main" in " ".join(child.cmdline())]
        if len(spawned) >= count or time.monotonic() > deadline:
            return spawned
        time.sleep(0.05)  # polling a process table: there is nothing to be woken by


@pytest.mark.timeout(240)
def test_two_server_processes_share_the_port_and_the_loopback_trust(tmp_path: Path) -> None:
    port = _free_port("127.0.0.1")
    server = _server(tmp_path, port)
    try:
        server.wait_for(r"serving after .* \(2 of 2\)", 120)
        base = f"http://127.0.0.1:{port}/api/v1/worker/w1"
        for _ in range(20):  # bounded: each new connection lands on either process
            with httpx.Client(timeout=30) as client:
                answer = client.get(f"{base}/models/production")
            assert answer.status_code == 200, answer.text  # on loopback with no token: the local trust
            assert answer.json() == {"models": {}}
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=30).status_code == 200
        spawned = _spawned(server, 2, 30)
        assert len(spawned) == 2, [child.cmdline() for child in spawned]
    finally:
        code = server.stop()
    assert code == 0, server.tail()
    _gone, alive = psutil.wait_procs(spawned, timeout=30)
    assert not alive, "server processes outlived their supervisor's clean stop"


@pytest.mark.timeout(240)
def test_server_processes_that_start_slowly_are_waited_for_and_a_stop_is_prompt(tmp_path: Path) -> None:
    """Both server processes are frozen (SIGSTOP) while they start, longer than uvicorn's supervisor waited for
    an answer (5 s): they must be kept, not replaced, and serve once thawed; a SIGTERM while one is frozen
    again must end everything within the stop grace."""
    port = _free_port("127.0.0.1")
    server = _server(tmp_path, port)
    try:
        spawned = _spawned(server, 2, 60)
        assert len(spawned) == 2
        for child in spawned:
            child.send_signal(signal.SIGSTOP)
        server.wait_for(r"0 of 2 server processes serving after", 60)  # it says what it waits for
        frozen_for = time.monotonic()
        while time.monotonic() - frozen_for < 8:  # longer than uvicorn's 5 s ping timeout
            assert psutil.Process(server.proc.pid).is_running()
            time.sleep(0.5)  # the starved machine: time passing is the point
        for child in spawned:
            child.send_signal(signal.SIGCONT)
        server.wait_for(r"serving after .* \(2 of 2\)", 120)
        assert {child.pid for child in _spawned(server, 2, 5)} == {child.pid for child in spawned}  # none replaced
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30).status_code == 200
        spawned[0].send_signal(signal.SIGSTOP)  # one that cannot honour SIGTERM
        asked = time.monotonic()
    finally:
        code = server.stop(timeout_s=STOP_GRACE_S + 30)
    took = time.monotonic() - asked
    assert code == 0, server.tail()
    assert took < STOP_GRACE_S + 10, f"the supervisor took {took:.0f} s to stop"
    _gone, alive = psutil.wait_procs(spawned, timeout=10)
    assert not alive
