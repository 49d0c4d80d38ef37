"""One trace across processes: a coordinator enqueues a job, a real worker process runs it, the coordinator goes on.

The worker is `zeroloop worker --profile selfplay` with the command workload (a script that
writes a tiny game batch) and `tracing.exporter = file`; the coordinator side is this test
process, its spans kept in memory. The trace must run from the enqueuing span, through the
worker's job span (via the job's payload), to the coordinator's handling of the job's
SELFPLAY_COMPLETE and the GAME_BATCH_READY it publishes (via the events' trace context).
The worker's log file is checked on the way: plain lines, no terminal render.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from zeroloop import tracing
from zeroloop.app import App
from zeroloop.config import EventSettings
from zeroloop.events.bus import Event
from zeroloop.events.runner import ConsumerRunner
from zeroloop.pipeline import jobs
from zeroloop.pipeline.coordinator import PipelineCoordinator
from zeroloop.queue.jobs import JobStatus
from zeroloop.store.queries import events as event_queries

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
SELFPLAY = """
import sys, numpy as np
out, games = sys.argv[1], int(sys.argv[2])
np.savez(out, num_games=np.asarray(games), obs=np.zeros((games * 5, 3)))
"""
WAIT_S = 90.0  # the longest a worker may take to start and run the job (seconds)


@contextmanager
def _worker(store_url: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A worker process running selfplay jobs with spans to worker-spans.jsonl; stopped (SIGTERM) at the end."""
    script = tmp_path / "selfplay.py"
    script.write_text(SELFPLAY)
    commands = tmp_path / "commands.toml"
    commands.write_text(f'[selfplay]\ncommand = "{sys.executable} {script} {{output}} {{games}}"\n')
    env = {key: value for key, value in os.environ.items() if not key.startswith("ZEROLOOP_")}
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "ZEROLOOP_STORE__URL": store_url,
            "ZEROLOOP_DATA_DIR": str(tmp_path / "worker-data"),
            "ZEROLOOP_CLUSTER__NODE_ID": "w1",
            "ZEROLOOP_WORKLOAD__KIND": "command",
            "ZEROLOOP_WORKLOAD__COMMAND_FILE": str(commands),
            "ZEROLOOP_TRACING__EXPORTER": "file",
            "ZEROLOOP_TRACING__FILE": str(tmp_path / "worker-spans.jsonl"),
            "ZEROLOOP_LOGS__FILE": str(tmp_path / "worker.log"),
        }
    )
    with (tmp_path / "worker.out").open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "zeroloop", "worker", "--profile", "selfplay"],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield worker
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=60)
            finally:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait(timeout=10)


def _completed(app: App, job_id: int, worker: subprocess.Popen[bytes]) -> None:
    """Return once the job completed; fail if the worker exits or WAIT_S passes first (bounded polling)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        assert worker.poll() is None, "the worker exited; see worker.out and worker.log"
        if app.queue.get(job_id).status is JobStatus.COMPLETED:
            return
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not complete within {WAIT_S} s; see worker.log")


def _event(app: App, event_type: str) -> Event:
    with app.store.read() as conn:
        (row,) = event_queries.latest(conn, types=[event_type])
    return Event.from_row(row)


def _hex(value: int, digits: int) -> str:
    return format(value, f"0{digits}x")


def test_one_trace_runs_from_the_coordinator_through_a_worker_process_and_back(
    app: App, store_url: str, tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    with tracing.span("enqueue selfplay", root=True) as enqueued:
        job = app.queue.enqueue(jobs.SELFPLAY, "c_2p", {"games": 2})
    origin = enqueued.get_span_context()
    trace_id, origin_id = _hex(origin.trace_id, 32), _hex(origin.span_id, 16)

    with _worker(store_url, tmp_path) as worker:
        _completed(app, job.id, worker)

    # Its log file (logs.file) holds plain lines, not a terminal render.
    logged = (tmp_path / "worker.log").read_text()
    assert "daemon selfplay_executor started" in logged and "\x1b[" not in logged
    assert all(re.match(r"^\S+Z [A-Z]+ [\w.]+: \S", line) for line in logged.splitlines())

    # The worker process: its job span continues the enqueuing span's trace.
    lines: list[dict[str, Any]] = [
        json.loads(line) for line in (tmp_path / "worker-spans.jsonl").read_text().splitlines()
    ]
    (job_span,) = [line for line in lines if line["name"] == "job selfplay"]
    assert job_span["pid"] == worker.pid != os.getpid()
    assert (job_span["trace_id"], job_span["parent_span_id"]) == (trace_id, origin_id)
    assert job_span["attributes"]["zeroloop.job.id"] == job.id
    assert job_span["resource"]["service.instance.id"] == "w1"

    # Its outcome event carries the worker's job span as the parent of whatever handles it.
    completed = _event(app, "SELFPLAY_COMPLETE")
    assert completed.traceparent is not None
    assert completed.traceparent.split("-")[1:3] == [trace_id, job_span["span_id"]]

    # Back in the coordinator: handling the event continues the trace, and what it publishes stays in it.
    coordinator = PipelineCoordinator(app.store, app.bus, app.queue, app.models, app.settings)
    asyncio.run(ConsumerRunner(app.bus, [coordinator.spec()], EventSettings(poll_interval_s=0.01)).run_until_idle())
    (handled,) = [span for span in spans.get_finished_spans() if span.name == "event SELFPLAY_COMPLETE -> pipeline"]
    assert handled.parent is not None
    assert (_hex(handled.context.trace_id, 32), _hex(handled.parent.span_id, 16)) == (trace_id, job_span["span_id"])
    batch = _event(app, "GAME_BATCH_READY")
    assert batch.traceparent is not None
    assert batch.traceparent.split("-")[1:3] == [trace_id, _hex(handled.context.span_id, 16)]
