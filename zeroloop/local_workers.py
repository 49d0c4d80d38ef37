"""Worker processes on this machine, started and kept running by the quickstart.

Each worker is `zeroloop worker` in its own process with its own node id, so the
cluster sees local workers exactly as it sees remote ones: they talk to the store and
the artifact location, nothing else. A worker that exits unexpectedly is restarted
after a delay that doubles per consecutive early exit (capped), so a broken setup
shows up as a visible restart count, not a storm.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from zeroloop.config import Settings

log = logging.getLogger(__name__)

HEALTHY_AFTER_S = 60.0  # a worker that ran this long resets its restart delay


@dataclass
class LocalWorker:
    """One supervised worker process (times: monotonic seconds)."""

    node_id: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    delay_s: float = 0.0
    restart_at: float = 0.0
    exits: list[int] = field(default_factory=list)


class LocalWorkers:
    """Starts `count` workers for `settings`, restarts those that die, stops them all on request."""

    def __init__(
        self,
        settings: Settings,
        count: int,
        *,
        profile: str = "training_node",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.profile = profile
        self.clock = clock
        base = settings.cluster.node_id
        logs = settings.data_dir / "logs"
        self.workers = [LocalWorker(f"{base}-w{index}", logs / f"{base}-w{index}.log") for index in range(count)]

    def environment(self, worker: LocalWorker) -> dict[str, str]:
        """The worker's environment: ours, plus its node id and this store, data directory and artifacts."""
        env = dict(os.environ)
        env.update(
            {
                "ZEROLOOP_CLUSTER__NODE_ID": worker.node_id,
                "ZEROLOOP_DATA_DIR": str(self.settings.data_dir),
                "ZEROLOOP_STORE__URL": self.settings.store_url,
                "ZEROLOOP_ARTIFACTS__URL": self.settings.artifacts_url,
            }
        )
        return env

    def start(self) -> None:
        """Start every worker that is not running."""
        for worker in self.workers:
            if worker.process is None:
                self._spawn(worker)

    def _spawn(self, worker: LocalWorker) -> None:
        worker.log_path.parent.mkdir(parents=True, exist_ok=True)
        with worker.log_path.open("ab") as output:
            worker.process = subprocess.Popen(
                [sys.executable, "-m", "zeroloop", "worker", "--profile", self.profile],
                env=self.environment(worker),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal reaches the quickstart only; it drains them
            )
        worker.started_at = self.clock()
        log.info("started worker %s (pid %d)", worker.node_id, worker.process.pid)

    def supervise(self) -> None:
        """Restart workers that exited, each after its backoff delay (call this periodically)."""
        now = self.clock()
        for worker in self.workers:
            if worker.process is not None and worker.process.poll() is not None:
                code = worker.process.returncode
                ran = now - worker.started_at
                worker.exits.append(code)
                worker.delay_s = 1.0 if ran >= HEALTHY_AFTER_S else min(60.0, max(1.0, worker.delay_s * 2))
                worker.restart_at = now + worker.delay_s
                worker.process = None
                log.warning(
                    "worker %s exited with %d after %.0f s; restart in %.0f s",
                    worker.node_id,
                    code,
                    ran,
                    worker.delay_s,
                )
            if worker.process is None and worker.exits and now >= worker.restart_at:
                worker.restarts += 1
                self._spawn(worker)

    def alive(self) -> int:
        """How many workers are running now."""
        return sum(1 for worker in self.workers if worker.process is not None and worker.process.poll() is None)

    def stop(self, deadline_s: float) -> None:
        """SIGTERM every worker (they drain), then SIGKILL those still running after `deadline_s` seconds."""
        running = [worker.process for worker in self.workers if worker.process is not None]
        for process in running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        end = time.monotonic() + deadline_s
        for process in running:
            try:
                process.wait(timeout=max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        for worker in self.workers:
            worker.process = None
