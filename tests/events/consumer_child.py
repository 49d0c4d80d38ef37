"""A consumer process for the crash test: appends each handled event id to a file, then exits when idle."""

from __future__ import annotations

import asyncio
import os
import sys

from zeroloop.config import EventSettings
from zeroloop.events.bus import Event, EventBus
from zeroloop.events.consumer import ConsumerSpec
from zeroloop.events.runner import ConsumerRunner
from zeroloop.store.database import Store


def main(url: str, out: str) -> None:
    """Handle every NODE_LOST event as consumer 'crashy', one durable line per event."""
    with Store(url) as store, open(out, "a", encoding="utf-8") as sink:

        def handle(event: Event) -> None:
            sink.write(f"{event.id}\n")
            sink.flush()
            os.fsync(sink.fileno())

        bus = EventBus(store, node="child", source="child")
        spec = ConsumerSpec("crashy", handle, types=("NODE_LOST",))
        runner = ConsumerRunner(bus, [spec], EventSettings(batch_size=7, poll_interval_s=0.01))
        asyncio.run(runner.run_until_idle())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
