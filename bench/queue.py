"""Benchmark of the work queue's hot path: claim with a lease, then complete, from several processes.

Enqueues N no-op jobs, starts W worker processes that run them to the end under leases
(each transition publishing its event in the same transaction), and prints jobs/s, every
worker's share, and the latency of getting more work, on SQLite and, when
ZEROLOOP_TEST_POSTGRES_URL is set, on PostgreSQL (durable: fsync and synchronous_commit
as the server has them, printed). The loops:

- `one`: a worker reports its job and leases the next in one transaction
  (`complete_and_claim`), as zeroloop's workers do;
- `separate`: `claim`, then `complete`: two transactions per job;
- `batch N`: lease up to N jobs in one statement (`claim_many`), then report them all in
  one transaction (`complete_many`).

With `--pgqueuer DIR` (a folder pgqueuer was installed into, never a dependency of zeroloop:
`pip install --target DIR pgqueuer`), each round also runs pgqueuer on the same
PostgreSQL, the same jobs and workers (drain mode, batch 1 and batch N), back to back
with zeroloop's, and prints the ratios: zeroloop batch N / pgqueuer batch N, and the
one-job loop / pgqueuer batch 1.

    scripts/with-postgres .venv/bin/python -m bench.queue [--jobs 5000] [--workers 4] [--batch 10] \
        [--rounds 3] [--pgqueuer /tmp/pgqueuer-env]
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
from dataclasses import dataclass
from queue import Empty
from typing import Any

import sqlalchemy as sa

from zeroloop.config import QueueSettings, Settings
from zeroloop.events.bus import EventBus
from zeroloop.queue.manager import Completion, JobQueue
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


def _worker(index: int, url: str, data_dir: str, jobs: int, loop: str, start: Any, results: Any) -> None:
    settings = bench_settings(url, Path(data_dir), jobs)
    store = Store(url, settings.store)
    node = f"worker-{index}"
    queue = direct_queue(settings, store, node)
    queue.claim(node, types=["warmup"])  # connect and compile before the clock starts
    queue.claim_many(node, types=["warmup"], limit=2)
    latencies: list[float] = []
    results.put(("ready", index))
    start.wait()
    began = time.perf_counter()
    done = 0
    if loop.startswith("batch"):
        size = int(loop.split()[1])
        while True:
            t0 = time.perf_counter()
            leases = queue.claim_many(node, types=[JOB_TYPE], limit=size)
            latencies.append(time.perf_counter() - t0)
            if not leases:
                break
            outcomes = queue.complete_many([Completion(lease.job.id, lease.token) for lease in leases])
            done += sum(1 for outcome in outcomes if not isinstance(outcome, Exception))
    else:
        t0 = time.perf_counter()
        lease = queue.claim(node, types=[JOB_TYPE])
        latencies.append(time.perf_counter() - t0)
        while lease is not None:
            if loop == "one":  # the worker's loop: report this job and lease the next in one transaction
                t0 = time.perf_counter()
                _done, lease = queue.complete_and_claim(lease.job.id, lease.token, None, node=node, types=[JOB_TYPE])
            else:
                queue.complete(lease.job.id, lease.token, None)
                t0 = time.perf_counter()
                lease = queue.claim(node, types=[JOB_TYPE])
            latencies.append(time.perf_counter() - t0)
            done += 1
    ended = time.perf_counter()
    store.close()
    results.put((index, done, began, ended, latencies[:-1]))


def _pgqueuer_worker(index: int, url: str, path: str, batch: int, start: Any, results: Any) -> None:
    """One pgqueuer worker (its own QueueManager and connection), draining the queue in batches of `batch`."""
    import asyncio
    from datetime import timedelta

    sys.path.append(path)
    import psycopg
    from pgqueuer import QueueManager
    from pgqueuer.db import PsycopgDriver
    from pgqueuer.queries import Queries
    from pgqueuer.types import QueueExecutionMode

    async def run() -> tuple[int, float, float]:
        connection = await psycopg.AsyncConnection.connect(_libpq(url), autocommit=True)
        manager = QueueManager(Queries(PsycopgDriver(connection)))
        done = 0

        @manager.entrypoint(JOB_TYPE)
        async def noop(_job: Any) -> None:
            nonlocal done
            done += 1

        results.put(("ready", index))
        await asyncio.get_running_loop().run_in_executor(None, start.wait)
        began = time.perf_counter()
        await manager.run(
            batch_size=batch, mode=QueueExecutionMode.drain, dequeue_timeout=timedelta(seconds=0.5),
            log_aggregation_interval=timedelta(0),
        )  # fmt: skip
        ended = time.perf_counter()
        await connection.close()
        return done, began, ended

    done, began, ended = asyncio.run(run())
    results.put((index, done, began, ended, []))


def _libpq(url: str) -> str:
    return str(sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False))


def _prepare_pgqueuer(url: str, path: str, jobs: int) -> None:
    import asyncio

    sys.path.append(path)
    import psycopg
    from pgqueuer.db import PsycopgDriver
    from pgqueuer.queries import Queries

    async def prepare() -> None:
        async with await psycopg.AsyncConnection.connect(_libpq(url), autocommit=True) as connection:
            queries = Queries(PsycopgDriver(connection))
            if not await queries.has_table("pgqueuer"):
                await queries.install()
            await queries.clear_queue()
            await queries.clear_queue_log()
            for first in range(0, jobs, 1000):
                count = min(1000, jobs - first)
                await queries.enqueue([JOB_TYPE] * count, [None] * count, [0] * count)

    asyncio.run(prepare())


@dataclass(frozen=True)
class Run:
    """One measured run: what ran, jobs/s, and the latencies of getting more work (seconds)."""

    name: str
    rate: float
    latencies: list[float]


def _spawn(target: Any, args_of: Any, workers: int, start_timeout_s: float) -> list[Any]:
    """Start `workers` processes of `target(i, *args_of(i), start, results)`, start them together, gather results."""
    ctx = mp.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=target, args=(i, *args_of(i), start, results)) for i in range(workers)]
    for proc in procs:
        proc.start()
    for _ in procs:  # every worker has imported and connected; the clock starts at `start`
        try:
            assert results.get(timeout=start_timeout_s)[0] == "ready"
        except Empty:
            for proc in procs:
                proc.kill()
            raise SystemExit(f"a worker did not start within {start_timeout_s:.0f} s (--start-timeout)") from None
    start.set()
    rows = [results.get(timeout=3600) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    return rows


def run(url: str, jobs: int, workers: int, loop: str, start_timeout_s: float) -> Run:
    """Run zeroloop's `loop` against the (disposable) database at `url` and print the figures."""
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
    rows = _spawn(_worker, lambda _i: (url, str(data_dir), jobs, loop), workers, start_timeout_s)
    figures = _report(f"zeroloop {loop}", rows, jobs)
    print(f"    [{backend}] {durability}; enqueue_many (one transaction): {jobs} jobs in {enqueue_s:.2f} s")
    return figures


def run_pgqueuer(url: str, path: str, jobs: int, workers: int, batch: int, start_timeout_s: float) -> Run:
    """Run pgqueuer with batches of `batch` on the same PostgreSQL and print the figures."""
    _prepare_pgqueuer(url, path, jobs)
    rows = _spawn(_pgqueuer_worker, lambda _i: (url, path, batch), workers, start_timeout_s)
    return _report(f"pgqueuer batch {batch}", rows, jobs)


def _report(name: str, rows: list[Any], jobs: int) -> Run:
    done = sum(row[1] for row in rows)
    elapsed = max(row[3] for row in rows) - min(row[2] for row in rows)
    latencies = sorted(lat for row in rows for lat in row[4])
    shares = ", ".join(f"w{row[0]} {100 * row[1] / max(done, 1):.0f}%" for row in sorted(rows))
    said = ""
    if latencies:
        p99 = latencies[int(0.99 * (len(latencies) - 1))]
        said = f"; more work: p50 {1000 * statistics.median(latencies):.2f} ms, p99 {1000 * p99:.2f} ms"
    print(f"  {name:>22}: {done}/{jobs} jobs in {elapsed:.2f} s = {done / elapsed:,.0f} jobs/s ({shares}){said}")
    if done != jobs:
        raise SystemExit(f"lost jobs: {jobs - done} never completed")
    return Run(name, done / elapsed, latencies)


def cpu_count() -> int:
    """CPUs this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _range(values: list[float]) -> str:
    return f"{min(values):.2f}" if len(values) == 1 else f"{min(values):.2f}-{max(values):.2f}"


def main() -> None:
    """Parse arguments and run on SQLite, then PostgreSQL when a server is given (with pgqueuer beside it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1, help="rounds of every loop, run back to back")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--loops", default="one,separate,batch", help="comma-separated: one, separate, batch")
    parser.add_argument("--pgqueuer", default=None, help="folder pgqueuer was installed into (PostgreSQL only)")
    parser.add_argument("--start-timeout", type=float, default=600.0, help="seconds a worker may take to start")
    args = parser.parse_args()
    loops = [f"batch {args.batch}" if loop == "batch" else loop for loop in args.loops.split(",")]
    print(f"{args.workers} workers, {args.jobs} jobs, {cpu_count()} CPUs, {args.rounds} round(s)")
    if args.backend in ("sqlite", "both"):
        for _round in range(args.rounds):
            for loop in loops:
                with tempfile.TemporaryDirectory(prefix="zeroloop-bench-") as tmp:
                    run(f"sqlite:///{tmp}/bench.db", args.jobs, args.workers, loop, args.start_timeout)
    pg = os.environ.get("ZEROLOOP_TEST_POSTGRES_URL")
    if args.backend not in ("postgresql", "both"):
        return
    if not pg:
        print("\n[postgresql] skipped: set ZEROLOOP_TEST_POSTGRES_URL or run via scripts/with-postgres")
        return
    ratios: dict[str, list[float]] = {"batch": [], "one": []}
    for _round in range(args.rounds):
        figures = {loop: run(pg, args.jobs, args.workers, loop, args.start_timeout) for loop in loops}
        if args.pgqueuer:
            for size in (args.batch, 1):
                peer = run_pgqueuer(pg, args.pgqueuer, args.jobs, args.workers, size, args.start_timeout)
                mine = figures.get(f"batch {args.batch}" if size > 1 else "one")
                if mine is not None:
                    ratios["batch" if size > 1 else "one"].append(mine.rate / peer.rate)
    if ratios["batch"]:
        print(f"\n  zeroloop batch {args.batch} / pgqueuer batch {args.batch}, per round: {_range(ratios['batch'])}x")
    if ratios["one"]:
        print(f"  zeroloop one-job loop / pgqueuer batch 1, per round: {_range(ratios['one'])}x")


if __name__ == "__main__":
    main()
