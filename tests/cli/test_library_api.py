"""The seeds' README snippet, with `zeroloop` in place of `app.coordination`, runs the loop.

It runs twice in a fresh process each time: the first run starts the default pipeline and
plays games; both report the same daemon instances; `get_system_health()` answers; the
final `await shutdown_all_coordinators()` drains everything and the process exits 0.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.test_kill_workers import TINY

SNIPPET = """
import asyncio, time
import sqlalchemy as sa
from zeroloop import initialize_all_coordinators, get_system_health, shutdown_all_coordinators


async def main():
    # Bootstrap all coordinators
    status = initialize_all_coordinators(auto_trigger_pipeline=True)
    print(f"Initialized: {status['_instances']}")

    # Check system health
    health = get_system_health()
    print(f"Health: {health['status']} ({health['overall_health']:.0%})")

    # The loop runs: wait (bounded) for its first game batch.
    from zeroloop.bootstrap import _runtime
    app = _runtime().app
    deadline = time.monotonic() + 120
    samples = 0
    while samples == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.5)  # polling the store from outside the loop's own thread
        with app.store.read() as conn:
            samples = conn.execute(sa.text("SELECT coalesce(sum(samples_total), 0) FROM pipelines")).scalar_one()
    print(f"Samples: {samples}")

    # Graceful shutdown
    await shutdown_all_coordinators()


asyncio.run(main())
"""


def _run(tmp_path: Path) -> str:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ZEROLOOP_")}
    env.update({**TINY, "ZEROLOOP_DATA_DIR": str(tmp_path / "data"), "ZEROLOOP_CLUSTER__NODE_ID": "lib"})
    done = subprocess.run(
        [sys.executable, "-c", SNIPPET], check=False, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _line(output: str, prefix: str) -> str:
    (line,) = [line for line in output.splitlines() if line.startswith(prefix)]
    return line[len(prefix) :]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_seeds_snippet_runs_the_loop_and_reports_the_same_instances_each_time(tmp_path: Path) -> None:
    first, second = _run(tmp_path), _run(tmp_path)
    instances = ast.literal_eval(_line(first, "Initialized: "))
    assert instances == ast.literal_eval(_line(second, "Initialized: "))
    assert {"leader_election", "pipeline", "selfplay_scheduler", "job_executor", "autoscaler"} <= set(instances)
    assert _line(first, "Health: ").split()[0] in ("healthy", "degraded", "unhealthy")
    assert int(_line(first, "Samples: ")) > 0  # the loop really played games
    assert int(_line(second, "Samples: ")) > 0
