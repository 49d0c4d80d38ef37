"""Benchmark: do real workers keep their throughput while bogus clients hammer `zeroloop serve`?

Starts a `zeroloop serve` process over a store with plenty of no-op jobs, registers W real
worker nodes (each with its worker token, exchanged for credentials, heartbeating every
second) that run jobs back to back through the server for the whole run, and measures their
jobs/s in alternating phases: alone, flooded, alone, flooded, ..., alone. While a phase is
flooded, C bogus clients, each from an address of its own (127.0.0.2, .3, ...), send a
request with a fresh random well-formed token every 1/R seconds (a new connection each:
the worst case for the server). Alternating phases, rather than one of each, keep the
machine's own drift (a busy neighbour, the queue table's dead rows) out of the comparison.
It prints jobs/s of each phase, each flooded phase's ratio to the mean of the alone phases
either side of it and the median of those ratios (a burst of someone else's load in one
phase moves the median little), the longest silence between any node's heartbeats, and
what the bogus clients were answered.

    scripts/with-postgres .venv/bin/python -m bench.flood [--clients 200] [--rate 1] [--seconds 8] [--rounds 4]

`python -m bench.flood drive URL CLIENTS RATE SECONDS` runs the bogus clients alone and
prints their answers as JSON. They run in a process of their own at nice 19: real
attackers use machines of their own, and on this one they should not take the cores from
the server and the workers by the scheduler's fairness alone (what is measured is what
their requests cost the server).
"""

# ruff: noqa: E402  (the imports follow the sys.path fix below on purpose)
from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder would come first on sys.path and shadow `queue`.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import asyncio
import json
import os
import random
import secrets
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import sqlalchemy as sa

from zeroloop.app import App
from zeroloop.cluster.nodes import NodeInfo
from zeroloop.config import QueueSettings, ServerSettings, Settings, StoreSettings
from zeroloop.control.tokens import Role, Tokens
from zeroloop.errors import ZeroloopError
from zeroloop.remote.client import ServerClient
from zeroloop.remote.parts import RemoteNodes, RemoteQueue
from zeroloop.store import migrate
from zeroloop.store.database import Store

JOB_TYPE = "noop"
START_TIMEOUT_S = 600.0  # a busy machine may take minutes to import and start a server (seconds)


# --- the bogus clients -----------------------------------------------------------------------------


async def _bogus(host: str, port: int, address: str, every_s: float, until: float, answers: Counter[str]) -> None:
    """One bogus client: a request with a fresh random token every `every_s` seconds, from `address`."""
    await asyncio.sleep(random.uniform(0, every_s))
    while time.monotonic() < until:
        began = time.monotonic()
        token = f"zl_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
        request = (
            f"POST /api/v1/worker/w1/jobs/claim HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
        ).encode()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, local_addr=(address, 0)), timeout=10
            )
            writer.write(request)
            status = (await asyncio.wait_for(reader.readline(), timeout=30)).split(b" ")
            answers[status[1].decode() if len(status) > 1 else "none"] += 1
            writer.close()
        except (OSError, TimeoutError) as exc:
            answers[type(exc).__name__] += 1
        await asyncio.sleep(max(0.0, every_s - (time.monotonic() - began)))


async def _drive(url: str, clients: int, rate: float, seconds: float) -> Counter[str]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    print("flooding", flush=True)  # `flooding` starts measuring on this line, after the imports
    until = time.monotonic() + seconds
    answers: Counter[str] = Counter()
    await asyncio.gather(
        *(
            _bogus(parts.hostname, parts.port, f"127.0.{2 + n // 250}.{2 + n % 250}", 1.0 / rate, until, answers)
            for n in range(clients)
        )
    )
    return answers


@contextmanager
def flooding(url: str, clients: int, rate: float, seconds: float) -> Iterator[dict[str, Any]]:
    """Run the bogus clients in a process of their own for `seconds` from when they start (the block is entered
    then); afterwards the dict holds their answers by status ({status: count})."""
    answers: dict[str, Any] = {}
    # Real attackers run on machines of their own; here they share the cores, so they yield them (nice 19)
    # rather than take them from the server and the workers by the scheduler's fairness alone.
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.flood", "drive", url, str(clients), str(rate), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.nice(19),  # noqa: PLW1509  (no threads are started before the fork)
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # "flooding" (or nothing, if it failed: communicate below shows that)
        yield answers
    finally:
        out, _ = proc.communicate(timeout=seconds + 120)
        answers.update(json.loads(out.strip().splitlines()[-1]) if out.strip() else {})


# --- the real workers ------------------------------------------------------------------------------


@dataclass
class Worker:
    """A real worker node: runs no-op jobs back to back and heartbeats every second, in two threads."""

    url: str
    token: str
    node: str
    done: int = 0
    beats: list[float] = field(default_factory=list)  # monotonic times of answered heartbeats
    errors: list[str] = field(default_factory=list)
    client: ServerClient | None = None

    def run(self, stop: threading.Event) -> list[threading.Thread]:
        """Start its threads (they end when `stop` is set)."""
        client = self.client = ServerClient(ServerSettings(url=self.url, token=self.token), self.node, credentials=True)
        nodes = RemoteNodes(client)
        nodes.register(NodeInfo(self.node, "bench", "manual", 1, 1, 1))
        self.beats.append(time.monotonic())

        def jobs() -> None:
            queue = RemoteQueue(client)
            lease = None
            try:
                while not stop.is_set():
                    if lease is None:
                        lease = queue.claim(self.node, types=[JOB_TYPE])
                        continue
                    _done, lease = queue.complete_and_claim(
                        lease.job.id, lease.token, None, node=self.node, types=[JOB_TYPE]
                    )
                    self.done += 1
            except ZeroloopError as exc:
                self.errors.append(f"jobs: {exc}")

        def heartbeats() -> None:
            while not stop.wait(1.0):
                try:
                    nodes.heartbeat(self.node, {})
                    self.beats.append(time.monotonic())
                except ZeroloopError as exc:
                    self.errors.append(f"heartbeat: {exc}")

        threads = [threading.Thread(target=jobs), threading.Thread(target=heartbeats)]
        for thread in threads:
            thread.start()
        return threads

    def longest_silence_s(self) -> float:
        """The longest time between two answered heartbeats (seconds)."""
        return max((b - a for a, b in zip(self.beats, self.beats[1:], strict=False)), default=0.0)


@contextmanager
def working(url: str, tokens: dict[str, str]) -> Iterator[list[Worker]]:
    """One real worker per node, running jobs back to back while the block runs."""
    workers = [Worker(url, token, node) for node, token in tokens.items()]
    stop = threading.Event()
    threads = [thread for worker in workers for thread in worker.run(stop)]
    try:
        yield workers
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
        for worker in workers:
            if worker.client is not None:
                worker.client.close()


def jobs_per_s(workers: list[Worker], seconds: float) -> float:
    """The workers' jobs per second together over the next `seconds` (a measuring window)."""
    began, first = time.monotonic(), sum(worker.done for worker in workers)
    threading.Event().wait(seconds)
    return (sum(worker.done for worker in workers) - first) / (time.monotonic() - began)


@dataclass
class Phases:
    """What `alternate` measured: jobs/s of each phase, the workers, and the bogus clients' answers."""

    alone: list[float]
    flooded: list[float]
    workers: list[Worker]
    answers: Counter[str]

    @property
    def ratios(self) -> list[float]:
        """Each flooded phase's jobs/s over the mean of the alone phases either side of it."""
        neighbours = zip(self.alone, self.alone[1:], strict=False)  # alone has one more phase than flooded
        return [rate / ((before + after) / 2) for rate, (before, after) in zip(self.flooded, neighbours, strict=True)]

    @property
    def ratio(self) -> float:
        """The median of `ratios`: a burst of someone else's load in one phase moves it little."""
        return float(statistics.median(self.ratios))


def alternate(url: str, tokens: dict[str, str], clients: int, rate: float, seconds: float, rounds: int) -> Phases:
    """Workers run throughout; phases of `seconds` alternate alone, flooded, alone, ... (`rounds` flooded ones)."""
    phases = Phases([], [], [], Counter())
    with working(url, tokens) as phases.workers:
        phases.alone.append(jobs_per_s(phases.workers, seconds))
        for _ in range(rounds):
            with flooding(url, clients, rate, seconds) as answers:
                phases.flooded.append(jobs_per_s(phases.workers, seconds))
            phases.answers.update(answers)
            phases.alone.append(jobs_per_s(phases.workers, seconds))
    return phases


# --- the server ------------------------------------------------------------------------------------


def prepare(url: str, data_dir: Path, nodes: list[str], jobs: int) -> dict[str, str]:
    """Empty the queue, enqueue `jobs` no-op jobs, and make a worker token per node: {node: token}."""
    settings = Settings(
        data_dir=data_dir, store=StoreSettings(url=url), queue=QueueSettings(soft_limit=jobs + 1, hard_limit=jobs + 2)
    )
    with Store(url) as store:
        migrate.upgrade(store)
    with App(settings, upgrade=False) as app:
        with app.store.transaction() as conn:
            for table in ("job_dependencies", "jobs", "events", "backpressure"):
                conn.execute(sa.text(f"DELETE FROM {table}"))
        for start in range(0, jobs, 5000):  # in chunks: one huge transaction strains a small PostgreSQL
            count = min(5000, jobs - start)
            app.queue.enqueue_many([{"job_type": JOB_TYPE, "config_key": "bench_2p"} for _ in range(count)])
        return {node: Tokens(app.store).create(Role.WORKER, node=node)[0] for node in nodes}


@contextmanager
def server(url: str, data_dir: Path, processes: int = 1) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A `zeroloop serve` process over the store at `url` on a free loopback port; (its base URL, the process)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {key: value for key, value in os.environ.items() if not key.startswith("ZEROLOOP_")}
    env.update({"ZEROLOOP_STORE__URL": url, "ZEROLOOP_DATA_DIR": str(data_dir), "ZEROLOOP_LOG_LEVEL": "ERROR"})
    argv = [sys.executable, "-m", "zeroloop", "serve", "--port", str(port), "--processes", str(processes)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc, START_TIMEOUT_S)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def wait_ready(base: str, proc: subprocess.Popen[Any], timeout_s: float) -> None:
    """Wait until the server at `base` answers /readyz (while its process lives, at most `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.2)  # a benchmark polling a port, not a test
    proc.kill()
    raise SystemExit(f"the server did not become ready within {timeout_s:.0f} s")


def main() -> None:
    """Parse arguments; run the benchmark (or, with `drive`, the bogus clients alone)."""
    if len(sys.argv) > 1 and sys.argv[1] == "drive":
        url, clients, rate, seconds = sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
        print(json.dumps(dict(asyncio.run(_drive(url, clients, rate, seconds)))))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200, help="bogus clients, each from its own address")
    parser.add_argument("--rate", type=float, default=1.0, help="requests per second of each bogus client")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each phase")
    parser.add_argument("--rounds", type=int, default=4, help="flooded phases (each between two alone ones)")
    parser.add_argument("--workers", type=int, default=2, help="real worker nodes")
    parser.add_argument("--processes", type=int, default=1, help="server processes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zeroloop-flood-") as tmp:
        url = os.environ.get("ZEROLOOP_TEST_POSTGRES_URL") or f"sqlite:///{tmp}/bench.db"
        nodes = [f"worker-{n}" for n in range(args.workers)]
        tokens = prepare(url, Path(tmp) / "data", nodes, 60_000)
        with server(url, Path(tmp) / "server", args.processes) as (base, _proc):
            phases = alternate(base, tokens, args.clients, args.rate, args.seconds, args.rounds)
    backend = url.split(":", 1)[0]
    print(f"\n[{backend}] {args.workers} workers, {args.clients} bogus clients at {args.rate:g}/s each, "
          f"{args.seconds:g} s phases, {len(os.sched_getaffinity(0))} CPUs")  # fmt: skip
    print(f"  jobs/s alone:   {', '.join(f'{rate:,.0f}' for rate in phases.alone)}")
    print(f"  jobs/s flooded: {', '.join(f'{rate:,.0f}' for rate in phases.flooded)}")
    print(f"  flooded / its neighbours: {', '.join(f'{r:.2f}' for r in phases.ratios)}; median {phases.ratio:.2f}")
    silence = max(worker.longest_silence_s() for worker in phases.workers)
    print(f"  longest silence between a node's heartbeats: {silence:.1f} s")
    print(f"  bogus clients answered: {dict(sorted(phases.answers.items()))}")
    errors = [error for worker in phases.workers for error in worker.errors]
    if errors:
        print(f"  worker errors: {errors[:5]}")


if __name__ == "__main__":
    main()
