"""Benchmark of a continuous snapshot: what one costs, so `backup.continuous_interval_s` (the RPO) can be chosen.

Fills a SQLite store with N jobs (each with its JOB_QUEUED event, as the loop writes them),
then takes snapshots as the backup daemon does (`Backups.create(label="continuous")`: the
online backup API, the manifest, backup.json) and prints, per store size, the store's bytes,
the seconds one snapshot takes (median and max of R), and the rate of a writer thread (one
event published per transaction) while snapshots run back to back, against the same writer
alone, side by side in one run. With
ZEROLOOP_TEST_POSTGRES_URL set, the same on PostgreSQL (pg_dump).

    python -m bench.backup [--jobs 20000 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from zeroloop.config import BackupSettings, QueueSettings, Settings, StoreSettings
from zeroloop.events.bus import EventBus
from zeroloop.ops.backup import CONTINUOUS, Backups
from zeroloop.queue.manager import JobQueue
from zeroloop.store import migrate
from zeroloop.store.database import Store

BATCH = 1000  # jobs enqueued per transaction while filling
PAD = "x" * 200  # payload padding, about what a selfplay job's payload and trace context weigh (bytes)
WRITER_S = 3.0  # how long each writer measurement runs (seconds)


def _queue(store: Store, settings: Settings) -> JobQueue:
    bus = EventBus(store, node="bench", source="bench")
    return JobQueue(store, bus, settings)


def _fill(queue: JobQueue, jobs: int) -> None:
    for start in range(0, jobs, BATCH):
        count = min(BATCH, jobs - start)
        queue.enqueue_many([{"job_type": "selfplay", "config_key": "bench_2p", "payload": {"pad": PAD}}] * count)


def _writer_rate(bus: EventBus, busy: threading.Event | None) -> float:
    """Events published per second (one write transaction each) by one writer over WRITER_S, while `busy`
    (snapshots running) stays set, if given."""
    done, started = 0, time.monotonic()
    payload = {"config_key": "bench_2p", "artifact_sha256": "0" * 64, "games": 1, "samples": 5}
    while time.monotonic() - started < WRITER_S and (busy is None or busy.is_set()):
        bus.publish("GAME_BATCH_READY", payload)
        done += 1
    return done / (time.monotonic() - started)


def _run(url: str, data_dir: Path, jobs: int, rounds: int) -> None:
    queue_settings = QueueSettings(soft_limit=10**9 - 1, hard_limit=10**9)
    settings = Settings(
        data_dir=data_dir,
        store=StoreSettings(url=url),
        queue=queue_settings,
        backup=BackupSettings(url=(data_dir / "backups").as_uri()),
    )
    with Store(url, settings.store) as store:
        migrate.upgrade(store)
        queue = _queue(store, settings)
        _fill(queue, jobs)
        backups = Backups(settings, store)
        took: list[float] = []
        for _ in range(rounds):
            began = time.monotonic()
            info = backups.create(label=CONTINUOUS)
            took.append(time.monotonic() - began)
        alone = _writer_rate(queue.bus, None)
        busy = threading.Event()
        busy.set()

        def snapshots() -> None:
            while busy.is_set():
                backups.create(label=CONTINUOUS)

        thread = threading.Thread(target=snapshots)
        thread.start()
        try:
            beside = _writer_rate(queue.bus, busy)
        finally:
            busy.clear()
            thread.join()
        print(
            f"{store.backend:10} jobs {jobs:>7}  store {info.store_bytes / 2**20:7.1f} MiB  "
            f"snapshot median {statistics.median(took):6.2f} s  max {max(took):6.2f} s  "
            f"writer alone {alone:7.0f}/s  during snapshots {beside:7.0f}/s"
        )


def main() -> None:
    """Parse the arguments and run each size on each backend available."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    for jobs in args.jobs:
        with tempfile.TemporaryDirectory(prefix="zeroloop-bench-backup-") as scratch:
            _run(f"sqlite:///{scratch}/store.db", Path(scratch), jobs, args.rounds)
        admin = os.environ.get("ZEROLOOP_TEST_POSTGRES_URL")
        if admin:
            with tempfile.TemporaryDirectory(prefix="zeroloop-bench-backup-") as scratch:
                _run_postgres(admin, Path(scratch), jobs, args.rounds)


def _run_postgres(admin: str, data_dir: Path, jobs: int, rounds: int) -> None:
    import uuid

    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    name = f"zeroloop_bench_{uuid.uuid4().hex[:8]}"
    base = make_url(admin).set(drivername="postgresql+psycopg")
    engine = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        _run(make_url(admin).set(database=name).render_as_string(hide_password=False), data_dir, jobs, rounds)
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        engine.dispose()


if __name__ == "__main__":
    main()
