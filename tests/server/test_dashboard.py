"""The dashboard's pages load in headless Chromium and show what the store holds; screenshots are kept.

Chromium is Debian's `chromium` package (.ci/run installs it). Without it the test skips
locally with the reason, and fails under CI=true. Each page is loaded by its own headless
run, which prints the DOM after the page loaded and writes a screenshot under the test's
temporary directory (pytest keeps the last few runs' directories).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.server.conftest import running_server
from tests.server.observed import DAEMON_ERROR, DEAD_ERROR, DECISION_REASON, KEY, LETTER_ERROR, NODE, populate
from zeroloop.app import App
from zeroloop.server.dashboard import REFRESH_S

CHROMIUM_TIMEOUT_S = 90


def chromium() -> str:
    """The chromium binary, or skip (fail under CI=true) when it is not installed."""
    found = shutil.which("chromium")
    if found is None:
        reason = "no chromium: install Debian's chromium package (.ci/run does) to load the dashboard in a browser"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (the browser test may not skip under CI=true)")
        pytest.skip(reason)
    return found


def load(binary: str, url: str, shots: Path, name: str) -> str:
    """The DOM of `url` after Chromium loaded it; its screenshot goes to shots/<name>.png."""
    shot = shots / f"{name}.png"
    done = subprocess.run(
        [
            binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,1000",
            f"--user-data-dir={shots / 'profile'}", f"--screenshot={shot}", "--dump-dom", url,
        ],
        capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"chromium failed on {url}: {done.stderr[-2000:]}"
    assert shot.stat().st_size > 1000, f"no screenshot of {url}"
    return done.stdout


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_every_page_loads_in_chromium_with_its_key_content(app: App, tmp_path: Path) -> None:
    binary = chromium()
    seen = populate(app)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    # Bound to loopback with no token in the store: the local trust opens the pages (tokens: test_dashboard_api).
    with running_server(app, loopback=True) as url:
        overview = load(binary, f"{url}/", shots, "overview")  # / redirects to the dashboard
        assert "<h1>overview</h1>" in overview and f'href="/dashboard/pipelines/{KEY}"' in overview
        assert seen.second_model in overview and "pipeline_paused" in overview  # the alert of populate's pause
        assert f'<meta http-equiv="refresh" content="{REFRESH_S}">' in overview  # a tab keeps itself current

        pipeline = load(binary, f"{url}/dashboard/pipelines/{KEY}", shots, "pipeline")
        assert f"pipeline {KEY}" in pipeline and "loss 0.7310" in pipeline
        assert pipeline.count('class="point"') == 2 and 'class="interval"' in pipeline  # both Elo points, with band
        assert DECISION_REASON in pipeline  # the decision with its evidence

        models = load(binary, f"{url}/dashboard/models", shots, "models")
        assert f"{seen.second_model} ← {seen.first_model}" in models  # the lineage

        queue = load(binary, f"{url}/dashboard/queue", shots, "queue")
        assert DEAD_ERROR in queue and LETTER_ERROR in queue
        assert f'action="/dashboard/actions/dead-letters/{seen.letter}/retry"' in queue

        nodes = load(binary, f"{url}/dashboard/nodes", shots, "nodes")
        assert NODE in nodes and "42%" in nodes and f'action="/dashboard/actions/nodes/{NODE}/drain"' in nodes
        assert "job_executor" in nodes and DAEMON_ERROR in nodes  # the daemon with its restarts and last error

        events = load(binary, f"{url}/dashboard/events?type=JOB_DEAD", shots, "events")
        assert "JOB_DEAD" in events and DEAD_ERROR in events and "PIPELINE_PAUSED</td>" not in events
    assert sorted(path.name for path in shots.glob("*.png")) == [
        "events.png", "models.png", "nodes.png", "overview.png", "pipeline.png", "queue.png",
    ]  # fmt: skip
