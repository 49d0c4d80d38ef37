"""`zeroloop quickstart` serves the dashboard on loopback and prints its address; the serving helper itself."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.reliability.test_kill_workers import TINY, kill_workers_of
from tests.server.observed import KEY, populate
from zeroloop.app import App
from zeroloop.server.background import loopback_socket, serving

ADDRESS = re.compile(r"dashboard (http://127\.0\.0\.1:\d+)/dashboard")


def test_serving_falls_back_to_a_free_port_when_the_configured_one_is_taken(app: App) -> None:
    populate(app)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        busy_port = taken.getsockname()[1]
        moved = loopback_socket(busy_port)
        assert moved.getsockname()[1] != busy_port
        moved.close()
        app.settings.server.port = busy_port
        with serving(app) as url:
            assert not url.endswith(f":{busy_port}")
            page = httpx.get(f"{url}/dashboard", timeout=30)
            assert page.status_code == 200 and KEY in page.text
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/healthz", timeout=5)  # stopped with the block
    finally:
        taken.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_quickstart_prints_the_address_of_its_dashboard(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ZEROLOOP_")}
    env.update({**TINY, "ZEROLOOP_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "150"})
    child = subprocess.Popen(
        [sys.executable, "-m", "zeroloop", "quickstart", "--minutes", "3", "--workers", "1"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in child.stdout or ()], daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        address = None
        deadline = time.monotonic() + 120
        while address is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            seen.append(line)
            match = ADDRESS.search(line)
            address = match.group(1) if match else None
        assert address is not None, "".join(seen)[-3000:]
        (pipeline,) = httpx.get(f"{address}/api/pipelines", timeout=30).json()
        assert pipeline["config_key"] == "tic_tac_toe_2p"
        assert "zeroloop_queue_jobs" in httpx.get(f"{address}/metrics", timeout=30).text
        page = httpx.get(f"{address}/dashboard", timeout=30)
        assert page.status_code == 200 and "tic_tac_toe_2p" in page.text
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=120) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        kill_workers_of(tmp_path / "data")
        reader.join(timeout=10)
        if child.stdout is not None:
            child.stdout.close()
