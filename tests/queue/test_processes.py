"""Real worker processes against the real SQLite file / PostgreSQL database: no job lost, none done twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.queue.conftest import event_log
from tests.queue.workers import open_queue
from zeroloop.errors import StaleLeaseError
from zeroloop.queue.jobs import JobStatus

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _spawn(
    program: str, url: str, tmp_path: Path, node: str, lease_s: float = 30.0
) -> tuple[subprocess.Popen[bytes], Path]:
    out = tmp_path / f"{node}.json"
    args = [sys.executable, "-m", "tests.queue.workers", program, "--url", url, "--data-dir", str(tmp_path / "data"),
            "--node", node, "--out", str(out), "--lease-s", str(lease_s)]  # fmt: skip
    return subprocess.Popen(args, cwd=ROOT), out


def test_concurrent_claimers_never_share_or_lose_a_job(store_url: str, tmp_path: Path) -> None:
    queue = open_queue(store_url, tmp_path / "data", "producer", 30.0)
    try:
        ids = {queue.enqueue("selfplay", "c", {"n": n}).id for n in range(90)}
        workers = [_spawn("drain", store_url, tmp_path, f"w{i}") for i in range(3)]
        for proc, _ in workers:
            assert proc.wait(timeout=120) == 0
        claimed = [json.loads(out.read_text()) for _, out in workers]
        flat = [job_id for ids_of_one in claimed for job_id in ids_of_one]
        assert sorted(flat) == sorted(ids)  # every job claimed, and by exactly one worker
        for (_, out), mine in zip(workers, claimed, strict=True):
            node = out.stem
            for job_id in mine:
                job = queue.get(job_id)
                assert job.status is JobStatus.COMPLETED and job.result == {"node": node} and job.attempts == 1
        per_job = Counter(p["job_id"] for _, p in event_log(queue.store, "JOB_CLAIMED"))
        assert set(per_job.values()) == {1}
        assert len(event_log(queue.store, "JOB_COMPLETED")) == len(ids)
    finally:
        queue.store.close()


def test_killed_worker_job_is_requeued_and_completed_once(store_url: str, tmp_path: Path) -> None:
    queue = open_queue(store_url, tmp_path / "data", "producer", 1.0)
    try:
        job = queue.enqueue("selfplay", "c")
        holder, lease_file = _spawn("hold", store_url, tmp_path, "doomed", lease_s=1.0)
        deadline = time.monotonic() + 60
        while not lease_file.exists() and holder.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        lease = json.loads(lease_file.read_text())
        os.kill(holder.pid, signal.SIGKILL)
        assert holder.wait(timeout=30) == -signal.SIGKILL
        assert queue.get(job.id).status is JobStatus.RUNNING  # nobody released it yet
        reaped = []
        deadline = time.monotonic() + 30
        while not reaped and time.monotonic() < deadline:  # the lease is 1 s long
            reaped = queue.reap()
            time.sleep(0.02)
        assert [j.id for j in reaped] == [job.id] and reaped[0].status is JobStatus.QUEUED
        rescuer, out = _spawn("drain", store_url, tmp_path, "rescuer")
        assert rescuer.wait(timeout=60) == 0
        assert json.loads(out.read_text()) == [job.id]
        with pytest.raises(StaleLeaseError):
            queue.complete(job.id, lease["token"], {"node": "doomed"})
        done = queue.get(job.id)
        assert done.status is JobStatus.COMPLETED and done.result == {"node": "rescuer"} and done.attempts == 2
        assert [p["node"] for _, p in event_log(queue.store, "JOB_COMPLETED")] == ["rescuer"]
        assert [p["node"] for _, p in event_log(queue.store, "JOB_LEASE_EXPIRED")] == ["doomed"]
    finally:
        queue.store.close()
