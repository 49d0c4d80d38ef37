"""The job child: never outlives its worker, never re-imports the caller's script, and a stalled job is killed.

- A worker SIGKILLed while its job child is still starting (importing) leaves nothing behind:
  the child knows its worker's pid from its command line, so a parent gone before the
  child could ask for the parent-death signal is noticed at once.
- The seeds' library snippet runs as a plain script without a `__main__` guard: job
  children start as `python -m zeroloop.pipeline.child`, which never imports the caller's
  main module, and a clean stop logs nothing at ERROR.
- A job that shows no progress for `queue.stall_after_s` (a command blocked forever, as a
  hung CUDA call blocks) is killed and retried, long before its timeout; one that works
  (CPU busy, longer than the stall limit) is not.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from tests.cli.test_library_api import SNIPPET
from tests.reliability.test_kill_workers import TINY
from zeroloop.app import App
from zeroloop.config import QueueSettings, Settings, StoreSettings, WorkloadSettings
from zeroloop.pipeline import jobs
from zeroloop.pipeline.executor import JobExecutor
from zeroloop.queue.jobs import JobStatus

ROOT = Path(__file__).parents[2]

PARENT = """
import os, signal, sys
from zeroloop.config import WorkloadSettings
from zeroloop.pipeline.child import JobChild

child = JobChild(WorkloadSettings().model_dump_json())
print(child.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # the worker dies while its child is still importing
"""


def _marked(mark: str) -> list[psutil.Process]:
    """Every process whose environment carries `mark` (the test's worker and all it started)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("ZL_TEST_MARK") == mark:
                found.append(process)
        except psutil.Error:
            continue
    return found


@pytest.mark.parametrize("attempt", range(5))
def test_a_worker_killed_while_its_job_child_starts_leaves_no_process_behind(attempt: int) -> None:
    mark = f"child-test-{uuid.uuid4().hex}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ZL_TEST_MARK": mark}
    done = subprocess.run(
        [sys.executable, "-c", PARENT], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == -9, done.stderr[-2000:]
    child_pid = int(done.stdout.split()[0])
    deadline = time.monotonic() + 60  # the child may still be importing: it checks its parent right after
    while _marked(mark) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [(p.pid, p.cmdline()) for p in _marked(mark) if p.is_running()]
    assert left == [], f"left behind (the child was {child_pid}): {left}"


def test_the_seeds_snippet_runs_as_a_plain_script_without_a_main_guard(tmp_path: Path) -> None:
    script = tmp_path / "snippet.py"
    script.write_text(SNIPPET)  # module-level asyncio.run(main()): no `if __name__ == "__main__":`
    env = {key: value for key, value in os.environ.items() if not key.startswith("ZEROLOOP_")}
    env.update({**TINY, "PYTHONPATH": str(ROOT), "ZEROLOOP_DATA_DIR": str(tmp_path / "data")})
    env["ZEROLOOP_CLUSTER__NODE_ID"] = "lib"
    done = subprocess.run(
        [sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=400, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert output.count("Initialized: ") == 1  # no child ran the script again
    assert int(output.split("Samples: ")[1].split()[0]) > 0  # the loop played games in its job child
    errors = [line for line in output.splitlines() if " ERROR " in line or "never retrieved" in line]
    assert errors == [], errors


SLEEPER = "import sys, time; time.sleep(300)"
BUSY = """
import sys, time, numpy as np
end = time.monotonic() + 12
while time.monotonic() < end:
    pass
np.savez(sys.argv[1], num_games=np.asarray(1), obs=np.zeros((5, 3)))
"""


def _app(store_url: str, tmp_path: Path, script: str, *, stall_after_s: float = 3.0) -> App:
    code = tmp_path / "selfplay.py"
    code.write_text(script)
    commands = tmp_path / "commands.toml"
    commands.write_text(f'[selfplay]\ncommand = "{sys.executable} {code} {{output}}"\n')
    settings = Settings(
        data_dir=tmp_path / "data",
        store=StoreSettings(url=store_url),
        workload=WorkloadSettings(kind="command", command_file=commands),
        queue=QueueSettings(stall_after_s=stall_after_s, lease_s=30.0),
    )
    return App(settings, upgrade=False)


def test_a_job_that_makes_no_progress_is_killed_and_retried_long_before_its_timeout(
    store_url: str, tmp_path: Path, settings: Settings
) -> None:
    with _app(store_url, tmp_path, SLEEPER) as app:
        job = app.queue.enqueue(jobs.SELFPLAY, "ringrift_2p", {"games": 1}, timeout_s=600)
        executor = JobExecutor(app.models, app.bus, app.queue, app.artifacts, app.settings, node="w1")
        began = time.monotonic()
        try:
            assert asyncio.run(executor.run_once())
        finally:
            executor.close()
        assert time.monotonic() - began < 120  # the stall limit and a few checks, not the 600 s timeout
        retried = app.queue.get(job.id)
        assert (retried.status, retried.attempts) == (JobStatus.QUEUED, 1)
        assert retried.error is not None and "node w1" in retried.error and "stalled" in retried.error
        sleepers = [p for p in psutil.process_iter(["cmdline"]) if SLEEPER in " ".join(p.info["cmdline"] or [])]
        assert sleepers == []  # the command went with the child


def test_a_job_that_works_longer_than_the_stall_limit_is_not_a_stall(
    store_url: str, tmp_path: Path, settings: Settings
) -> None:
    # Busy for 12 s against a limit of 8 s: on a loaded machine the child's watcher may wait seconds to be
    # scheduled, so the margin is wide; the job would still be a stall at 8 s if its CPU were not watched.
    with _app(store_url, tmp_path, BUSY, stall_after_s=8.0) as app:
        job = app.queue.enqueue(jobs.SELFPLAY, "ringrift_2p", {"games": 1}, timeout_s=600)
        executor = JobExecutor(app.models, app.bus, app.queue, app.artifacts, app.settings, node="w1")
        try:
            assert asyncio.run(executor.run_once())
        finally:
            executor.close()
        assert app.queue.get(job.id).status is JobStatus.COMPLETED


def test_a_job_child_stopped_by_a_signal_makes_the_executor_release_its_job_and_drain(
    store_url: str, tmp_path: Path, settings: Settings
) -> None:
    # Slurm's scancel signals every process of the job: the worker's child gets SIGTERM too. The
    # job goes back uncounted, and the executor claims it (or anything) no more: its node is stopping.
    with _app(store_url, tmp_path, SLEEPER) as app:
        job = app.queue.enqueue(jobs.SELFPLAY, "ringrift_2p", {"games": 1}, timeout_s=600)
        executor = JobExecutor(app.models, app.bus, app.queue, app.artifacts, app.settings, node="w1")

        async def scenario() -> None:
            running = asyncio.create_task(executor.run(idle_wait_s=0.1))
            deadline = time.monotonic() + 60
            while not (children := _job_children()) or app.queue.get(job.id).status is not JobStatus.RUNNING:
                assert time.monotonic() < deadline, "the job never started"
                await asyncio.sleep(0.05)  # until the job runs in its child (bounded above)
            (child,) = children
            child.send_signal(signal.SIGTERM)
            await asyncio.wait_for(running, timeout=60)  # it stops by itself: no stop() was called

        asyncio.run(scenario())
        released = app.queue.get(job.id)
        assert (released.status, released.attempts) == (JobStatus.QUEUED, 0)
        assert executor.jobs_released == 1


def _job_children() -> list[psutil.Process]:
    """This process's job children (`python -m zeroloop.pipeline.child`)."""
    return [p for p in psutil.Process().children() if "zeroloop.pipeline.child" in " ".join(p.cmdline())]
