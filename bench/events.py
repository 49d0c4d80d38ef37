"""Event bus benchmark on both backends: durable publish throughput and cross-process latency.

    scripts/with-postgres .venv/bin/python -m bench.events [--events N]

Prints, per backend: durable events/s from 1 and 4 publisher processes (one commit per
event, and `publish_many` with 100 events per commit), start-up excluded; and the
publish-to-handler latency (p50, p99 in milliseconds, from the `publish` call, so the
commit is included) seen by a consumer in another process. PostgreSQL keeps fsync on.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from typing import Any

# Run as a script, bench/ is first on sys.path and its queue.py would shadow the stdlib's.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

from zeroloop.config import EventSettings  # noqa: E402
from zeroloop.events.bus import Event, EventBus  # noqa: E402
from zeroloop.events.consumer import ConsumerSpec  # noqa: E402
from zeroloop.events.runner import ConsumerRunner  # noqa: E402
from zeroloop.store import migrate  # noqa: E402
from zeroloop.store.database import Store  # noqa: E402

PAYLOAD = {"node": "n", "silent_s": 0.0}


def _publisher(url: str, count: int, batch: int, barrier: Any, results: Any) -> None:
    with Store(url) as store:
        bus = EventBus(store, node="bench", source="bench")
        bus.publish("NODE_LOST", PAYLOAD)  # connect and warm up before the clock starts
        barrier.wait()
        start = time.perf_counter()
        if batch == 1:
            for _ in range(count):
                bus.publish("NODE_LOST", PAYLOAD)
        else:
            for _ in range(count // batch):
                bus.publish_many([("NODE_LOST", PAYLOAD)] * batch)
        results.put((start, time.perf_counter()))


def throughput(url: str, processes: int, count: int, batch: int) -> float:
    """Durable events/s appended by `processes` publisher processes, `count` events each (start-up excluded)."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    workers = [ctx.Process(target=_publisher, args=(url, count, batch, barrier, results)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    spans = [results.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join()
    return processes * count / (max(end for _, end in spans) - min(start for start, _ in spans))


def _consumer(url: str, n: int, ready: Any, results: Any) -> None:
    latencies: list[tuple[int, float, float]] = []
    with Store(url) as store:
        bus = EventBus(store, node="bench", source="bench")

        async def consume() -> None:
            def handle(event: Event) -> None:
                latencies.append((event.id, event.created_at, time.time()))
                if len(latencies) >= n:
                    runner.stop()

            spec = ConsumerSpec("latency", handle, types=("NODE_REGISTERED",), durable=False)
            runner = ConsumerRunner(bus, [spec], EventSettings())
            await runner.start()
            task = asyncio.create_task(runner.run())
            await asyncio.sleep(0.5)  # the listener is in place
            ready.set()
            await task

        asyncio.run(consume())
    results.put(latencies)


def latency(url: str, n: int, interval_s: float) -> tuple[float, float, float, float]:
    """Latency (ms) for `n` events published every `interval_s` s: p50, p99 from publish; p50, p99 from commit."""
    ctx = mp.get_context("spawn")
    ready, results = ctx.Event(), ctx.Queue()
    consumer = ctx.Process(target=_consumer, args=(url, n, ready, results))
    consumer.start()
    ready.wait(60)
    with Store(url) as store:
        bus = EventBus(store, node="bench", source="bench")
        committed = {}
        for _ in range(n):
            event_id = bus.publish("NODE_REGISTERED", {"node": "n", "host": "h", "provider": "p"})
            committed[event_id] = time.time()
            time.sleep(interval_s)
    handled = results.get(timeout=120)
    consumer.join(30)
    from_publish = sorted((done - created) * 1000 for _, created, done in handled)
    from_commit = sorted((done - committed[event_id]) * 1000 for event_id, _, done in handled)
    return (*_p50_p99(from_publish), *_p50_p99(from_commit))


def _p50_p99(samples: list[float]) -> tuple[float, float]:
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def run(backend: str, url: str, events: int) -> None:
    """Print every figure for one backend."""
    with Store(url) as store:
        migrate.upgrade(store)
    for processes in (1, 4):
        single = throughput(url, processes, events // processes // 4, 1)
        batched = throughput(url, processes, events, 100)
        line = f"{backend:10} publishers={processes}: {single:7.0f} events/s (1 event per commit)"
        print(f"{line}, {batched:7.0f} events/s (publish_many, 100 per commit)", flush=True)
    p50, p99, c50, c99 = latency(url, 300, 0.005)
    poll_ms = EventSettings().poll_interval_s * 1000
    how = f"SQLite poll interval {poll_ms:.0f} ms" if backend == "sqlite" else "LISTEN/NOTIFY"
    print(f"{backend:10} publish-to-handler in another process: p50 {p50:.2f} ms, p99 {p99:.2f} ms ({how})")
    print(f"{backend:10} commit-to-handler in another process:  p50 {c50:.2f} ms, p99 {c99:.2f} ms")


def main() -> None:
    """Run the benchmark on SQLite, and on PostgreSQL when ZEROLOOP_TEST_POSTGRES_URL is set."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=8000, help="events per publisher in the batched runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run("sqlite", f"sqlite:///{tmp}/bench.db", args.events)
    pg = os.environ.get("ZEROLOOP_TEST_POSTGRES_URL")
    if pg:
        run("postgresql", pg, args.events)
    else:
        print("postgresql: skipped (set ZEROLOOP_TEST_POSTGRES_URL or run via scripts/with-postgres)")


if __name__ == "__main__":
    main()
