"""A real worker process told to stop, or killed, in the middle of a job, on both backends.

The job is a user command that sleeps (the command workload), so it is surely running
when the signal comes. SIGTERM or SIGINT, to the worker alone or to its whole process
group (as a service manager or a terminal sends them): the worker releases the job
(queued again at once, its attempt not counted) and exits within its drain deadline.
SIGKILL: the job's child process and the user command it started end with the worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from zeroloop.app import App
from zeroloop.pipeline import jobs
from zeroloop.queue.jobs import Job, JobStatus

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
DRAIN_DEADLINE_S = 4.0
MARK = "zeroloop-fault-test-sleeper"


def _command_file(tmp_path: Path) -> Path:
    path = tmp_path / "commands.toml"
    sleeper = f"import sys, time; sys.argv.append('{MARK}'); time.sleep(120)"
    path.write_text(f'[selfplay]\ncommand = "{sys.executable} -c \\"{sleeper}\\" {MARK} {{output}}"\n')
    return path


@pytest.fixture
def worker(store_url: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`zeroloop worker --profile selfplay` on the store under test, running the sleeping command workload."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("ZEROLOOP_")}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "ZEROLOOP_STORE__URL": store_url,
            "ZEROLOOP_DATA_DIR": str(tmp_path / "worker-data"),
            "ZEROLOOP_CLUSTER__NODE_ID": "w1",
            "ZEROLOOP_WORKLOAD__KIND": "command",
            "ZEROLOOP_WORKLOAD__COMMAND_FILE": str(_command_file(tmp_path)),
            "ZEROLOOP_DAEMONS__DRAIN_DEADLINE_S": str(DRAIN_DEADLINE_S),
        }
    )
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "zeroloop", "worker", "--profile", "selfplay"],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, which a test may signal as a whole
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        log.close()
        for process in psutil.process_iter(["cmdline"]):
            if MARK in (process.info["cmdline"] or []):
                process.kill()


def _running_job_and_sleeper(app: App, worker: subprocess.Popen[bytes], job: Job) -> list[psutil.Process]:
    """Wait (bounded) until `job` runs on the worker and its command started; return the worker's descendants."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert worker.poll() is None, "the worker exited before running the job"
        descendants = psutil.Process(worker.pid).children(recursive=True)
        sleeping = [p for p in descendants if MARK in _cmdline(p)]
        if sleeping and app.queue.get(job.id).status is JobStatus.RUNNING:
            return descendants
        time.sleep(0.1)
    raise AssertionError("the job did not start within 90 s; see worker.log")


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


@pytest.mark.parametrize(
    "stop",
    [
        pytest.param(lambda pid: os.kill(pid, signal.SIGTERM), id="sigterm"),
        pytest.param(lambda pid: os.killpg(pid, signal.SIGTERM), id="sigterm-to-the-group"),  # a service manager
        pytest.param(lambda pid: os.killpg(pid, signal.SIGINT), id="ctrl-c"),  # a terminal: the whole group
    ],
)
def test_a_stopped_worker_releases_the_job_in_flight_and_exits_within_the_drain_deadline(
    app: App, worker: subprocess.Popen[bytes], stop: Callable[[int], None]
) -> None:
    job = app.queue.enqueue(jobs.SELFPLAY, "tic_tac_toe_2p", {"games": 1})
    descendants = _running_job_and_sleeper(app, worker, job)
    stop(worker.pid)
    began = time.monotonic()
    assert worker.wait(timeout=DRAIN_DEADLINE_S * 4) == 0
    assert time.monotonic() - began <= DRAIN_DEADLINE_S + 2.0
    released = app.queue.get(job.id)
    assert released.status is JobStatus.QUEUED
    assert released.attempts == 0  # a release is not a failed attempt
    assert released.lease_expires_at is None
    _gone, alive = psutil.wait_procs(descendants, timeout=5)
    assert alive == []


def test_sigkill_ends_the_jobs_children_with_the_worker(app: App, worker: subprocess.Popen[bytes]) -> None:
    job = app.queue.enqueue(jobs.SELFPLAY, "tic_tac_toe_2p", {"games": 1})
    descendants = _running_job_and_sleeper(app, worker, job)
    assert len(descendants) >= 2  # the job's child process and the user command under it
    worker.kill()
    worker.wait(timeout=10)
    _gone, alive = psutil.wait_procs(descendants, timeout=5)
    assert alive == []
