"""The loop under fire: a quickstart with 2 workers, one of which is SIGKILLed every 20 s.

Afterwards the store must show that nothing was lost or doubled: every completed selfplay
job's game batch is in the manifest, counted once; every job is completed, queued or
running (none vanished, none died of the kills); no model was promoted twice; and rounds
kept completing after the first kill.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa

from zeroloop.store.database import Store
from zeroloop.store.schema import artifacts, events, jobs

pytestmark = pytest.mark.slow

KILL_EVERY_S = 20.0
RUN_MINUTES = 1.6

TINY = {
    "ZEROLOOP_WORKLOAD__OVERRIDES": (
        '{"tic_tac_toe_2p": {"blocks": 1, "channels": 16, "simulations": 24, "parallel_games": 16,'
        ' "train_steps": 60, "eval_simulations": 16, "baseline_simulations": 16, "eval_parallel_games": 4}}'
    ),
    "ZEROLOOP_WORKLOAD__TORCH_THREADS": "1",
    "ZEROLOOP_PIPELINE__TRAIN_AFTER_SAMPLES": "300",
    "ZEROLOOP_PIPELINE__SELFPLAY_GAMES_PER_JOB": "16",
    "ZEROLOOP_PIPELINE__EVAL_GAMES": "8",
    "ZEROLOOP_PIPELINE__MIN_EVAL_GAMES": "4",
    "ZEROLOOP_PIPELINE__BASELINE_GAMES": "4",
    "ZEROLOOP_PIPELINE__SELFPLAY_QUEUE_TARGET": "4",
    "ZEROLOOP_QUEUE__LEASE_S": "4",
    "ZEROLOOP_QUEUE__REAPER_INTERVAL_S": "1",
    "ZEROLOOP_QUEUE__RETRY_INITIAL_S": "0.5",
    "ZEROLOOP_QUEUE__DEFAULT_MAX_ATTEMPTS": "10",
    "ZEROLOOP_CLUSTER__HEARTBEAT_INTERVAL_S": "1",
    "ZEROLOOP_CLUSTER__NODE_LOST_AFTER_S": "6",
    "ZEROLOOP_DAEMONS__DRAIN_DEADLINE_S": "5",
    "ZEROLOOP_EVENTS__POLL_INTERVAL_S": "0.05",
}


def workers_of(data_dir: Path) -> list[psutil.Process]:
    """The `zeroloop worker` processes of the quickstart using `data_dir` (they run detached from it)."""
    found = []
    for process in psutil.process_iter(["pid"]):
        try:
            if "worker" in process.cmdline() and process.environ().get("ZEROLOOP_DATA_DIR") == str(data_dir):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def kill_workers_of(data_dir: Path) -> None:
    """SIGKILL any worker left of `data_dir` (after a quickstart that was itself killed)."""
    for process in workers_of(data_dir):
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


def _run_under_fire(store_url: str, data_dir: Path, workdir: Path) -> tuple[int, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ZEROLOOP_")}
    env.update(TINY)
    env.update({"ZEROLOOP_STORE__URL": store_url, "ZEROLOOP_DATA_DIR": str(data_dir), "COLUMNS": "150"})
    log = workdir / "quickstart.log"
    with log.open("wb") as output:
        proc = subprocess.Popen(
            [sys.executable, "-m", "zeroloop", "quickstart", "--minutes", str(RUN_MINUTES), "--workers", "2"],
            env=env,
            cwd=workdir,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        kills = 0
        deadline = time.monotonic() + RUN_MINUTES * 60 + 120
        next_kill = time.monotonic() + KILL_EVERY_S
        # Fault injection on a fixed cadence, bounded in count and time.
        while proc.poll() is None and time.monotonic() < deadline and kills < 20:
            time.sleep(max(0.0, min(1.0, next_kill - time.monotonic())))
            if time.monotonic() >= next_kill and time.monotonic() < deadline - 120:
                victims = workers_of(data_dir)
                if victims:
                    victims[kills % len(victims)].send_signal(signal.SIGKILL)
                    kills += 1
                next_kill += KILL_EVERY_S
        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        finally:
            kill_workers_of(data_dir)
    return kills, log.read_text(errors="replace")


@pytest.mark.timeout(420)
def test_killing_workers_loses_and_doubles_nothing(store_url: str, tmp_path: Path) -> None:
    kills, output = _run_under_fire(store_url, tmp_path / "data", tmp_path)
    assert kills >= 3, output[-3000:]
    assert "after " in output and "rounds completed" in output, output[-3000:]
    with Store(store_url) as store, store.read() as conn:
        job_rows = conn.execute(sa.select(jobs)).mappings().all()
        completions = [
            row["payload"]
            for row in conn.execute(
                sa.select(events.c.payload).where(events.c.type == "SELFPLAY_COMPLETE").order_by(events.c.id)
            ).mappings()
        ]
        batches = conn.execute(sa.select(artifacts.c.sha256).where(artifacts.c.kind == "game_batch")).scalars().all()
        ready = conn.execute(sa.select(events.c.payload).where(events.c.type == "GAME_BATCH_READY")).scalars().all()
        promoted = conn.execute(sa.select(events.c.payload).where(events.c.type == "MODEL_PROMOTED")).scalars().all()
        rounds = conn.execute(sa.text("SELECT iteration, samples_total FROM pipelines")).one()
    statuses = Counter(row["status"] for row in job_rows)
    # no job vanished or died of the kills: every job finished, or is still waiting or leased
    assert set(statuses) <= {"completed", "queued", "running"}, statuses
    completed_selfplay = [row for row in job_rows if row["type"] == "selfplay" and row["status"] == "completed"]
    # every produced game batch is in the manifest, and each completion was counted exactly once
    assert {row["result"]["artifact_sha256"] for row in completed_selfplay} <= set(batches)
    assert Counter(payload["job_id"] for payload in completions) == Counter(row["id"] for row in completed_selfplay)
    shas = [payload["artifact_sha256"] for payload in completions]
    assert len(shas) == len(set(shas))
    # The coordinator stops before the workers drain (no round starts while they do), so what the
    # two workers finish meanwhile waits in the event log for the next start: at most one job each.
    ready_shas = [payload["artifact_sha256"] for payload in ready]
    assert len(ready_shas) == len(set(ready_shas))  # each batch counted once
    assert set(ready_shas) <= set(shas)
    assert len(set(shas) - set(ready_shas)) <= 2, output[-3000:]
    handled = set(ready_shas)
    assert rounds.samples_total == sum(p["samples"] for p in completions if p["artifact_sha256"] in handled)
    # no model promoted twice by the policy (the watchdog's rollback re-promotes on purpose), and the loop went on
    promoted_ids = [payload["model_id"] for payload in promoted if payload["reason"] != "rollback"]
    assert len(promoted_ids) == len(set(promoted_ids))
    assert rounds.iteration >= 2, output[-3000:]
    assert promoted_ids
