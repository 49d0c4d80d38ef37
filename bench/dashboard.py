"""Benchmark the dashboard's charts on a long run's store: page times, and what one reading costs the leader.

Fills a store as a month of the loop leaves it: `--days` of readings as the readings daemon
keeps them (one a minute for `dashboard.readings_full_days`, one an hour before), `--jobs`
finished jobs, `--rounds` rounds of export and train jobs with a workload's evidence counts,
`--models` rated models and the training progress events of the newest runs. Then prints:

- one reading: the seconds `Readings.take()` needs in steady state (the jobs of the last
  minute to count) and the first time after an upgrade (the table's oldest
  `MAX_JOBS_PER_READING` finished jobs to count; the rest go to the next readings), median
  and max over `--runs`;
- each page and the pipeline's JSON series, fetched over HTTP from a server in a thread:
  median and max seconds over `--runs`, for the last 24 hours and the last 30 days.

With ZEROLOOP_TEST_POSTGRES_URL set, the same on PostgreSQL after SQLite.

    python -m bench.dashboard [--days 30] [--jobs 100000] [--models 200] [--rounds 300] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from zeroloop.app import App
from zeroloop.config import Settings, StoreSettings
from zeroloop.control.readings import MAX_JOBS_PER_READING, Readings
from zeroloop.server.background import in_thread
from zeroloop.store import migrate
from zeroloop.store.database import Store
from zeroloop.store.queries import pipelines as pipeline_queries
from zeroloop.store.queries import readings as reading_queries
from zeroloop.store.schema import events, jobs, models, readings

KEY = "connect_four_2p"
TYPES = ("selfplay", "export", "train", "evaluate")
STATES = ("active", "draining", "terminated", "lost", "launching")
DAY_S = 86400.0


def _figures(minute: int, jobs_done: int) -> dict[str, Any]:
    """A reading's figures of about the size the daemon writes (four job types, five node states, one pipeline)."""
    queue = {
        t: {"queued": minute % 7, "running": 2, "due": minute % 5, "oldest_due_s": 12.5, "finished": 3,
            "mean_wait_s": 8.25, "max_wait_s": 20.0}
        for t in TYPES
    }  # fmt: skip
    pipeline = {"iteration": minute // 30, "samples_total": 1200 * minute, "games_total": 40 * minute,
                "slot_s": 55.0 * jobs_done, "cpu_s": 52.0 * jobs_done, "gpu_s": 3.0 * jobs_done,
                "jobs": float(jobs_done), "jobs_with_cpu": float(jobs_done)}  # fmt: skip
    return {
        "queue": queue, "nodes": {s: 3 for s in STATES}, "cost_per_hour": 12.5, "cost_total": 0.2 * minute,
        "pipelines": {KEY: pipeline}, "counted_until": 0.0,
    }  # fmt: skip


def fill(store: Store, now: float, days: int, job_count: int, model_count: int, rounds: int) -> None:
    """Write the month: readings, finished jobs, round jobs with counts, rated models, training events."""
    full = 14 * DAY_S
    times = [now - minute * 60.0 for minute in range(int(min(days * DAY_S, full) // 60))]
    times += [now - full - hour * 3600.0 for hour in range(1, int(max(0.0, days * DAY_S - full) // 3600))]
    times.sort()
    with store.transaction() as conn:
        pipeline_queries.ensure_pipeline(conn, KEY, now)
        for index, at in enumerate(times):
            figures = _figures(index, index * 3)
            figures["counted_until"] = at - 120.0
            reading_queries.insert_reading(conn, at, figures)
    base = {
        "config_key": KEY, "priority": 0, "need_gpus": 0, "need_memory_bytes": 0, "need_labels": None,
        "target_node": None, "idempotency_key": None, "attempts": 1, "max_attempts": 3, "timeout_s": 3600.0,
        "lease_node": "n1", "lease_token": 1, "waiting_on": 0, "has_dependents": False, "lease_expires_at": None,
        "error": None,
    }  # fmt: skip
    span = days * DAY_S
    rows = []
    for number in range(job_count):
        finished = now - span + span * number / job_count
        counts = {"games": 16, "positions": 640, "evaluations": 51200, "draws": 3, "policy_entropy": 1.1, "cpu_s": 52.0}
        rows.append({
            **base, "type": "selfplay", "payload": {"games": 16}, "status": "completed", "run_after": finished - 70,
            "claimed_at": finished - 60, "finished_at": finished, "created_at": finished - 70, "updated_at": finished,
            "result": {"artifact_sha256": "a" * 64, "size_bytes": 40000, "counts": counts},
        })  # fmt: skip
    for number in range(rounds):
        at = now - span + span * number / rounds
        export = {"samples": 80000, "source_samples": 10000, "symmetries": 8, "games": 400, "length_mean": 30.5,
                  "length_p10": 12, "length_p50": 30, "length_p90": 41, "outcome_draw": 0.1, "outcome_win_seat0": 0.5,
                  "outcome_win_seat1": 0.4, "cpu_s": 20.0}  # fmt: skip
        train = {"steps": 1000, "loss": 1.2, "policy_loss": 0.9, "value_loss": 0.3, "value_accuracy_opening": 0.6,
                 "value_accuracy_middle": 0.7, "value_accuracy_end": 0.9, "value_mse_opening": 0.5,
                 "value_mse_middle": 0.4, "value_mse_end": 0.2, "policy_entropy": 1.4, "target_entropy": 1.3,
                 "policy_agreement": 0.6, "cpu_s": 900.0}  # fmt: skip
        for job_type, counts in (("export", export), ("train", train)):
            rows.append({
                **base, "type": job_type, "payload": {"iteration": number}, "status": "completed", "run_after": at,
                "claimed_at": at, "finished_at": at + 60, "created_at": at, "updated_at": at + 60,
                "result": {"artifact_sha256": "b" * 64, "size_bytes": 10, "counts": counts},
            })  # fmt: skip
    with store.transaction() as conn:
        for start in range(0, len(rows), 5000):
            conn.execute(sa.insert(jobs), rows[start : start + 5000])
        for number in range(model_count):
            at = now - span + span * number / model_count
            rating = {"elo": 10.0 * number, "stderr": 40.0, "games": 200.0, "opponents": 4, "fitted_at": now}
            conn.execute(sa.insert(models).values(
                id=f"{KEY}-{number:04d}", config_key=KEY, artifact_sha256="c" * 64, parent_id=None, window_sha256=None,
                job_ids=[], stage="archived" if number < model_count - 1 else "production", elo=rating["elo"],
                created_at=at, promoted_at=at + 60, meta={"iteration": number, "rating": rating},
            ))  # fmt: skip
        progress = [
            {"type": "TRAINING_PROGRESS", "payload": {"config_key": KEY, "job_id": 10_000_000 + run, "step": step,
             "loss": 2.0 - step / 1000, "samples_per_s": 900.0, "policy_loss": 1.5, "value_loss": 0.5},
             "source": "bench", "node": "n1", "created_at": now - 3600 + run * 60 + step / 100, "config_key": KEY}
            for run in range(20) for step in range(50, 1001, 50)
        ]  # fmt: skip
        conn.execute(sa.insert(events), progress)


def _timed(call: Callable[[], object], runs: int) -> str:
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return f"median {statistics.median(seconds):.3f} s, max {max(seconds):.3f} s"


def run(url: str, label: str, args: argparse.Namespace, workdir: Path) -> None:
    now = time.time()
    with Store(url) as store:
        migrate.upgrade(store)
        started = time.perf_counter()
        fill(store, now, args.days, args.jobs, args.models, args.rounds)
        print(f"{label}: filled in {time.perf_counter() - started:.0f} s")
    settings = Settings(data_dir=workdir / "data", store=StoreSettings(url=url))
    with App(settings, upgrade=False) as app:
        with app.store.read() as conn:
            count = len(reading_queries.list_readings(conn, since=0.0, limit=10**7))
        print(f"  {count} readings, {args.jobs} finished jobs, {args.rounds} rounds, {args.models} models")
        steady = Readings(app.store, app.settings.dashboard)
        print(f"  one reading, steady state: {_timed(steady.take, args.runs)}")

        def first() -> None:
            with app.store.transaction() as conn:
                conn.execute(sa.delete(readings).where(readings.c.at > now - 600))
                previous = reading_queries.latest_reading(conn)
                assert previous is not None
                figures = dict(previous["figures"])
                figures["counted_until"] = -1.0  # as the first reading after an upgrade: every job is counted
                reading_queries.insert_reading(conn, now - 300, figures)
            steady.take()

        print(
            f"  the first reading after an upgrade (counts the table's oldest {MAX_JOBS_PER_READING} finished jobs): "
            f"{_timed(first, args.runs)}"
        )
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        with in_thread(app, sock, loopback=True) as base, httpx.Client(base_url=base, timeout=120) as client:
            for path in (
                f"/dashboard/pipelines/{KEY}", f"/dashboard/pipelines/{KEY}?hours=720", "/dashboard/queue",
                "/dashboard/queue?hours=720", "/dashboard/nodes", f"/api/pipelines/{KEY}/series",
            ):  # fmt: skip

                def get(path: str = path) -> None:
                    answer = client.get(path)
                    answer.raise_for_status()

                print(f"  GET {path}: {_timed(get, args.runs)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        run(f"sqlite:///{Path(tmp) / 'store.db'}", "SQLite", args, Path(tmp))
    postgres = os.environ.get("ZEROLOOP_TEST_POSTGRES_URL")
    if postgres:
        with tempfile.TemporaryDirectory() as tmp:
            run(postgres, "PostgreSQL", args, Path(tmp))


if __name__ == "__main__":
    main()
