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
from tests.server.conftest import running_server
from tests.server.observed import KEY, populate
from zeroloop.app import App
from zeroloop.control.tokens import Role, Tokens
from zeroloop.server.background import PORT_FILE, loopback_socket, serving

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


def test_serving_keeps_the_port_it_took_for_the_next_run_over_the_same_data(app: App) -> None:
    """A restart whose configured port is still taken comes back on the port the last run took."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        app.settings.server.port = taken.getsockname()[1]
        with serving(app) as first:
            pass
        assert (app.settings.data_dir / PORT_FILE).read_text().strip() == first.rsplit(":", 1)[1]
        with serving(app) as second:
            assert httpx.get(f"{second}/healthz", timeout=30).status_code == 200
        assert second == first
    finally:
        taken.close()


def test_the_quickstarts_own_pages_stay_open_after_the_first_token(app: App) -> None:
    """Creating a token (for a remote viewer, a worker) closes `zeroloop serve`'s loopback door, not the
    quickstart's: its dashboard, JSON API and /metrics keep answering this machine without a token."""
    populate(app)
    with serving(app) as own, running_server(app, loopback=True) as served:
        for url in (own, served):
            assert httpx.get(f"{url}/dashboard", timeout=30).status_code == 200
        Tokens(app.store).create(Role.VIEWER)
        for path in ("/dashboard", "/api/pipelines", "/metrics"):
            assert httpx.get(f"{own}{path}", timeout=30).status_code == 200, path
            assert httpx.get(f"{served}{path}", timeout=30).status_code == 401, path
        assert httpx.get(f"{own}/api/pipelines", headers={"Authorization": "Bearer zl_bad_x"}, timeout=30).is_error
