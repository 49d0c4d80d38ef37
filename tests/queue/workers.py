"""Worker programs the multi-process tests run as real subprocesses (`python -m tests.queue.workers ...`)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from zeroloop.config import QueueSettings, Settings
from zeroloop.events.bus import EventBus
from zeroloop.queue.manager import JobQueue
from zeroloop.store.database import Store


def open_queue(url: str, data_dir: Path, node: str, lease_s: float) -> JobQueue:
    """A queue on `url` with real time, as a worker process would have it."""
    settings = Settings(
        data_dir=data_dir,
        queue=QueueSettings(lease_s=lease_s, reaper_interval_s=min(5.0, lease_s), retry_initial_s=0.0),
    )
    store = Store(url, settings.store)
    return JobQueue(store, EventBus(store, node=node, source=node), settings)


def drain(queue: JobQueue, node: str, out: Path) -> None:
    """Claim and complete jobs one at a time until none is left; write the ids claimed to `out`."""
    claimed = []
    for _ in range(100_000):
        lease = queue.claim(node)
        if lease is None:
            break
        claimed.append(lease.job.id)
        queue.complete(lease.job.id, lease.token, {"node": node})
    out.write_text(json.dumps(claimed))


def hold(queue: JobQueue, node: str, out: Path) -> None:
    """Claim one job, report its lease in `out`, then hang without heartbeating (until killed; at most 120 s)."""
    lease = queue.claim(node)
    assert lease is not None
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"job_id": lease.job.id, "token": lease.token, "expires_at": lease.expires_at}))
    tmp.rename(out)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.5)


def main() -> None:
    """Run one worker program."""
    parser = argparse.ArgumentParser()
    parser.add_argument("program", choices=["drain", "hold"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--lease-s", type=float, default=30.0)
    args = parser.parse_args()
    queue = open_queue(args.url, args.data_dir, args.node, args.lease_s)
    try:
        (drain if args.program == "drain" else hold)(queue, args.node, args.out)
    finally:
        queue.store.close()


if __name__ == "__main__":
    main()
