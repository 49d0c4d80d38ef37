"""Benchmark of the work queue's hot path: claim with a lease, then complete, from several processes.

Enqueues N no-op jobs, starts W worker processes that each hold one job at a time under
a lease and complete it (each transition publishing its event in the same transaction),
and prints jobs/s, every worker's share, and the p50/p99 latency of getting the next
lease, on SQLite and, when ZEROLOOP_TEST_POSTGRES_URL is set, on PostgreSQL (durable:
fsync and synchronous_commit as the server has them, printed). Two loops are measured:

- `complete_and_claim`: a worker reports its job and leases the next in one transaction,
  as zeroloop's workers do (latency: that call);
- `claim, complete`: two transactions per job (latency: the claim alone).

    scripts/with-postgres .venv/bin/python -m bench.queue [--jobs 5000] [--workers 4]
"""

# ruff: noqa: E402  (the imports follow the sys.path fix below on purpose)
from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its name would shadow the
# standard library's `queue`, which multiprocessing needs.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from typing import Any

import sqlalchemy as sa

from zeroloop.config import QueueSettings, Settings
from zeroloop.events.bus import EventBus
from zeroloop.queue.manager import JobQueue
from zeroloop.store import migrate
from zeroloop.store.database import Store

JOB_TYPE = "noop"


def bench_settings(url: str, data_dir: Path, jobs: int) -> Settings:
    """Settings whose backpressure never refuses the benchmark's jobs."""
    queue = QueueSettings(soft_limit=jobs + 1, hard_limit=jobs + 2, lease_s=30.0)
    return Settings(data_dir=data_dir, store={"url": url}, queue=queue)


def direct_queue(settings: Settings, store: Store, node: str) -> JobQueue:
    """A queue straight on the store."""
    bus = EventBus(store, node=node, source="bench")
    return JobQueue(store, bus, settings)


def _worker(index: int, url: str, data_dir: str, jobs: int, combined: bool, start: Any, results: Any) -> None:
    settings = bench_settings(url, Path(data_dir), jobs)
    store = Store(url, settings.store)
    node = f"worker-{index}"
    queue = direct_queue(settings, store, node)
    queue.claim(node, types=["warmup"])  # connect and compile before the clock starts
    latencies: list[float] = []
    results.put(("ready", index))
    start.wait()
    began = time.perf_counter()
    t0 = time.perf_counter()
    lease = queue.claim(node, types=[JOB_TYPE])
    latencies.append(time.perf_counter() - t0)
    while lease is not None:
        if combined:  # the worker's loop: report this job and lease the next in one transaction
            t0 = time.perf_counter()
            _done, lease = queue.complete_and_claim(lease.job.id, lease.token, None, node=node, types=[JOB_TYPE])
        else:
            queue.complete(lease.job.id, lease.token, None)
            t0 = time.perf_counter()
            lease = queue.claim(node, types=[JOB_TYPE])
        latencies.append(time.perf_counter() - t0)
    ended = time.perf_counter()
    store.close()
    results.put((index, len(latencies) - 1, began, ended, latencies[:-1]))


def run(url: str, jobs: int, workers: int, *, combined: bool) -> None:
    """Run the benchmark against the (empty or disposable) database at `url` and print the figures."""
    data_dir = Path(tempfile.mkdtemp(prefix="zeroloop-bench-"))
    settings = bench_settings(url, data_dir, jobs)
    with Store(url, settings.store) as store:
        migrate.upgrade(store)
        with store.transaction() as conn:
            for table in ("job_dependencies", "jobs", "events", "backpressure"):
                conn.execute(sa.text(f"DELETE FROM {table}"))
        durability = "WAL, synchronous=NORMAL"
        if store.backend == "postgresql":
            with store.read() as conn:
                fsync = conn.execute(sa.text("SHOW fsync")).scalar_one()
                sync = conn.execute(sa.text("SHOW synchronous_commit")).scalar_one()
            durability = f"fsync={fsync}, synchronous_commit={sync}"
        queue = direct_queue(settings, store, "producer")
        t0 = time.perf_counter()
        queue.enqueue_many([{"job_type": JOB_TYPE, "config_key": "bench_2p", "payload": {"n": n}} for n in range(jobs)])
        enqueue_s = time.perf_counter() - t0
        backend = store.backend
    ctx = mp.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(i, url, str(data_dir), jobs, combined, start, results))
        for i in range(workers)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:  # every worker has imported and connected; the clock starts at `start`
        assert results.get(timeout=120)[0] == "ready"
    start.set()
    rows = [results.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    done = sum(row[1] for row in rows)
    elapsed = max(row[3] for row in rows) - min(row[2] for row in rows)
    latencies = sorted(lat for row in rows for lat in row[4])
    p99 = latencies[int(0.99 * (len(latencies) - 1))] if latencies else float("nan")
    shares = ", ".join(f"w{row[0]} {100 * row[1] / max(done, 1):.1f}%" for row in sorted(rows))
    loop = "complete_and_claim" if combined else "claim, complete"
    print(f"\n[{backend}] {durability}; {workers} workers, {cpu_count()} CPUs; loop: {loop}")
    print(f"  enqueue_many (one transaction): {jobs} jobs in {enqueue_s:.2f} s")
    print(f"  {done}/{jobs} jobs in {elapsed:.2f} s = {done / elapsed:,.0f} jobs/s")
    print(f"  shares: {shares}")
    print(f"  next-lease latency: p50 {1000 * statistics.median(latencies):.2f} ms, p99 {1000 * p99:.2f} ms")
    if done != jobs:
        raise SystemExit(f"lost jobs: {jobs - done} never completed")


def cpu_count() -> int:
    """CPUs this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def main() -> None:
    """Parse arguments and run on SQLite, then PostgreSQL when a server is given."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--loop", choices=["combined", "separate", "both"], default="both")
    args = parser.parse_args()
    loops = [loop == "combined" for loop in ("combined", "separate") if args.loop in (loop, "both")]
    if args.backend in ("sqlite", "both"):
        for combined in loops:
            with tempfile.TemporaryDirectory(prefix="zeroloop-bench-") as tmp:
                run(f"sqlite:///{tmp}/bench.db", args.jobs, args.workers, combined=combined)
    pg = os.environ.get("ZEROLOOP_TEST_POSTGRES_URL")
    if args.backend in ("postgresql", "both"):
        if pg:
            for combined in loops:
                run(pg, args.jobs, args.workers, combined=combined)
        else:
            print("\n[postgresql] skipped: set ZEROLOOP_TEST_POSTGRES_URL or run via scripts/with-postgres")


if __name__ == "__main__":
    main()
