"""Benchmark of `zeroloop serve`: the queue's hot path through the server next to direct store access.

Enqueues N no-op jobs and lets W worker processes run them to the end, each holding one
job at a time under a lease: once straight on the store (JobQueue), once through a
`zeroloop serve` process on loopback with one worker token per process (RemoteQueue over
HTTP: token check, JSON, a store transaction per request). Two loops are measured, as in
bench/queue.py:

- `complete_and_claim`: report the job and lease the next in one request (latency: that call);
- `claim, complete`: two requests per job (latency: one claim round trip).

Besides jobs/s and latency it prints the CPU time one job costs, split into the worker
processes, the server processes and PostgreSQL (the processes of the one PostgreSQL
server the store is on, when it runs on this machine: its postmaster and its children,
none of another cluster's): where the server's cost goes. Workers and the server get
`--start-timeout` seconds to start (600 by default: a busy machine imports slowly).

    scripts/with-postgres .venv/bin/python -m bench.server [--jobs 2000] [--workers 4] [--rounds 3] [--processes CPUS]
"""

# ruff: noqa: E402  (the imports follow the sys.path fix below on purpose)
from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder would come first on sys.path and shadow `queue`.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from queue import Empty
from typing import Any

import psutil
import sqlalchemy as sa

from bench.flood import wait_ready
from bench.queue import bench_settings, direct_queue
from zeroloop.cluster.nodes import NodeInfo, Nodes
from zeroloop.config import ServerSettings
from zeroloop.control.tokens import Role, Tokens
from zeroloop.events.bus import EventBus
from zeroloop.remote.client import ServerClient
from zeroloop.remote.parts import RemoteQueue
from zeroloop.store import migrate
from zeroloop.store.database import Store

JOB_TYPE = "noop"


def _worker(
    index: int, target: dict[str, Any], jobs: int, combined: bool, start: Any, measured: Any, results: Any
) -> None:
    node = f"worker-{index}"
    store: Store | None = None
    client: ServerClient | None = None
    if target["server"] is None:
        settings = bench_settings(target["store"], Path(target["data_dir"]), jobs)
        store = Store(target["store"], settings.store)
        queue: Any = direct_queue(settings, store, node)
    else:
        client = ServerClient(ServerSettings(url=target["server"], token=target["tokens"][index]), node)
        queue = RemoteQueue(client)
    queue.claim(node, types=["warmup"])  # connect before the clock starts
    latencies: list[float] = []
    results.put(("ready", index))
    start.wait()
    cpu = time.process_time()
    began = time.perf_counter()
    t0 = time.perf_counter()
    lease = queue.claim(node, types=[JOB_TYPE])
    latencies.append(time.perf_counter() - t0)
    while lease is not None:
        if combined:
            t0 = time.perf_counter()
            _done, lease = queue.complete_and_claim(lease.job.id, lease.token, None, node=node, types=[JOB_TYPE])
        else:
            queue.complete(lease.job.id, lease.token, None)
            t0 = time.perf_counter()
            lease = queue.claim(node, types=[JOB_TYPE])
        latencies.append(time.perf_counter() - t0)
    ended = time.perf_counter()
    cpu = time.process_time() - cpu
    results.put((index, len(latencies) - 1, began, ended, latencies[:-1], cpu))
    measured.wait(timeout=120)  # keep the connection (and its database backend) until the CPU is read
    if store is not None:
        store.close()
    if client is not None:
        client.close()


def _prepare(url: str, data_dir: Path, jobs: int) -> None:
    settings = bench_settings(url, data_dir, jobs)
    with Store(url, settings.store) as store:
        with store.transaction() as conn:
            for table in ("job_dependencies", "jobs", "events", "backpressure"):
                conn.execute(sa.text(f"DELETE FROM {table}"))
        queue = direct_queue(settings, store, "producer")
        queue.enqueue_many([{"job_type": JOB_TYPE, "config_key": "bench_2p", "payload": {"n": n}} for n in range(jobs)])


def _cpu_s(processes: list[psutil.Process]) -> float:
    total = 0.0
    for proc in processes:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def _postgres(url: str) -> list[psutil.Process]:
    """The processes of the PostgreSQL server at `url`, when it runs on this machine: its postmaster (the parent
    of the backend serving a connection made here) and all its children; [] for SQLite or a remote server."""
    if not url.startswith("postgresql"):
        return []
    with Store(url) as store, store.read() as conn:
        backend = int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
    try:
        postmaster = psutil.Process(backend).parent()
    except psutil.Error:
        return []  # not on this machine
    if postmaster is None or postmaster.name() not in ("postgres", "postmaster"):
        return []
    return [postmaster, *postmaster.children()]


def measure(target: dict[str, Any], jobs: int, workers: int, *, combined: bool) -> Figures:
    """Run the jobs with `workers` processes against `target`: jobs/s, every call's latency (seconds),
    and the CPU seconds per job of the workers, the server and PostgreSQL."""
    _prepare(target["store"], Path(target["data_dir"]), jobs)
    server = psutil.Process(target["server_pid"]) if target["server_pid"] else None
    servers = [server, *server.children(recursive=True)] if server else []
    ctx = mp.get_context("spawn")
    start, measured, results = ctx.Event(), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(i, target, jobs, combined, start, measured, results)) for i in range(workers)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        try:
            assert results.get(timeout=target["start_timeout"])[0] == "ready"
        except Empty:
            for proc in procs:
                proc.kill()
            raise SystemExit(
                f"a worker did not start within {target['start_timeout']:.0f} s (--start-timeout)"
            ) from None
    postgres = _postgres(target["store"])  # now: with the backends of the workers' connections
    server_cpu, postgres_cpu = _cpu_s(servers), _cpu_s(postgres)
    start.set()
    rows = [results.get(timeout=900) for _ in procs]
    server_cpu, postgres_cpu = _cpu_s(servers) - server_cpu, _cpu_s(postgres) - postgres_cpu
    measured.set()
    for proc in procs:
        proc.join(timeout=60)
    done = sum(row[1] for row in rows)
    if done != jobs:
        raise SystemExit(f"lost jobs: {jobs - done} never completed")
    elapsed = max(row[3] for row in rows) - min(row[2] for row in rows)
    cpu = (sum(row[5] for row in rows) / done, server_cpu / done, postgres_cpu / done if postgres else None)
    return Figures(done / elapsed, sorted(lat for row in rows for lat in row[4]), cpu)


@dataclass(frozen=True)
class Figures:
    """One measured run: jobs/s, each call's latency (s), CPU s per job (workers, server, PostgreSQL or None)."""

    rate: float
    latencies: list[float]
    cpu: tuple[float, float, float | None]


def _percentiles(latencies: list[float]) -> str:
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    return f"p50 {1000 * statistics.median(latencies):.2f} ms, p99 {1000 * p99:.2f} ms"


def _start_server(url: str, data_dir: Path, processes: int, timeout_s: float) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {key: value for key, value in os.environ.items() if not key.startswith("ZEROLOOP_")}
    env.update({"ZEROLOOP_STORE__URL": url, "ZEROLOOP_DATA_DIR": str(data_dir), "ZEROLOOP_LOG_LEVEL": "WARNING"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "zeroloop", "serve", "--port", str(port), "--processes", str(processes)],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    wait_ready(base, proc, timeout_s)
    return proc, base


def _range(values: list[float], fmt: str) -> str:
    low, high = min(values), max(values)
    return format(low, fmt) if len(values) == 1 else f"{format(low, fmt)}-{format(high, fmt)}"


def run(url: str, jobs: int, workers: int, rounds: int, processes: int, start_timeout_s: float = 600.0) -> None:
    """Both loops, direct and through the server, on the database at `url` (emptied of jobs and events).

    Each round measures direct then server back to back, so both see the same machine
    load; the figures are the range over the rounds, and the ratio is taken per round.
    """
    data_dir = Path(tempfile.mkdtemp(prefix="zeroloop-bench-"))
    with Store(url) as store:
        migrate.upgrade(store)
        backend = store.backend
        tokens = [Tokens(store).create(Role.WORKER, node=f"worker-{i}")[0] for i in range(workers)]
        nodes = Nodes(store, EventBus(store, node="bench", source="bench"))
        for i in range(workers):  # behind the server a node claims only once registered
            nodes.register(NodeInfo(f"worker-{i}", "bench", "manual", 1, 1, 1))
    server, base = _start_server(url, data_dir / "server", processes, start_timeout_s)
    local_pg = bool(_postgres(url))
    try:
        cpus = len(os.sched_getaffinity(0))
        setup = f"{workers} workers, {jobs} jobs, {cpus} CPUs; server: {processes} process(es); {rounds} rounds"
        print(f"\n[{backend}] {setup}")
        for combined in (True, False):
            loop = "complete_and_claim" if combined else "claim, complete"
            what = "complete_and_claim call" if combined else "claim round trip"
            direct = {
                "store": url, "data_dir": str(data_dir), "server": None, "server_pid": None,
                "start_timeout": start_timeout_s,
            }  # fmt: skip
            remote = {**direct, "server": base, "tokens": tokens, "server_pid": server.pid}
            figures: dict[str, list[Figures]] = {"direct": [], "server": []}
            for _ in range(rounds):
                figures["direct"].append(measure(direct, jobs, workers, combined=combined))
                figures["server"].append(measure(remote, jobs, workers, combined=combined))
            print(f"  loop {loop}:")
            for name, rows in figures.items():
                rates = [row.rate for row in rows]
                p50 = [1000 * statistics.median(row.latencies) for row in rows]
                p99 = [1000 * row.latencies[int(0.99 * (len(row.latencies) - 1))] for row in rows]
                print(
                    f"    {name}: {_range(rates, ',.0f'):>13} jobs/s   {what}: p50 {_range(p50, '.2f')} ms, "
                    f"p99 {_range(p99, '.2f')} ms"
                )
                split = [("workers", [1e6 * row.cpu[0] for row in rows])]
                if name == "server":
                    split.append(("server", [1e6 * row.cpu[1] for row in rows]))
                if local_pg:
                    split.append(("PostgreSQL", [1e6 * (row.cpu[2] or 0.0) for row in rows]))
                totals = [1e6 * (row.cpu[0] + row.cpu[1] + (row.cpu[2] or 0.0)) for row in rows]
                parts = ", ".join(f"{part} {_range(values, '.0f')}" for part, values in split)
                print(f"      CPU per job: {parts}; total {_range(totals, '.0f')} us")
            ratios = [s.rate / d.rate for d, s in zip(figures["direct"], figures["server"], strict=True)]
            cost = [_total(s) / _total(d) for d, s in zip(figures["direct"], figures["server"], strict=True)]
            rounds_said = f"{_range(ratios, '.2f')}x the throughput, {_range(cost, '.2f')}x the CPU"
            print(f"    server / direct, per round: {rounds_said}")
    finally:
        server.terminate()
        server.wait(timeout=30)


def _total(figures: Figures) -> float:
    return figures.cpu[0] + figures.cpu[1] + (figures.cpu[2] or 0.0)


def main() -> None:
    """Parse arguments; run on PostgreSQL when ZEROLOOP_TEST_POSTGRES_URL is set, else on SQLite."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="direct/server pairs measured back to back")
    parser.add_argument("--processes", type=int, default=len(os.sched_getaffinity(0)), help="server processes")
    parser.add_argument("--start-timeout", type=float, default=600.0, help="seconds workers and server may take")
    args = parser.parse_args()
    pg = os.environ.get("ZEROLOOP_TEST_POSTGRES_URL")
    if pg:
        run(pg, args.jobs, args.workers, args.rounds, args.processes, args.start_timeout)
        return
    with tempfile.TemporaryDirectory(prefix="zeroloop-bench-") as tmp:
        run(f"sqlite:///{tmp}/bench.db", args.jobs, args.workers, args.rounds, args.processes, args.start_timeout)


if __name__ == "__main__":
    main()
