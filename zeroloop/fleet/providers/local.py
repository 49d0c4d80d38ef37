"""The local provider: worker processes on this machine, one `zeroloop worker` process per node.

Each launch starts `python -m zeroloop worker` in its own session, detached from the
launching process (a Ctrl-C in the terminal reaches only the launcher, which drains the
workers itself; a launcher that dies leaves them running for the next one to find),
logging to `<data_dir>/logs/<node>.log` (plain or JSON lines, rotated by size: the `logs`
settings), and anything it prints outside logging (a crash's traceback) in `<node>.out`
beside it. The provider id is `pid:start time`, so
a recycled pid is never mistaken for the worker. `machines()` finds the workers of this
pool through their environment (`ZEROLOOP_CLUSTER__POOL` and the data directory), so a
coordinator that restarted still sees, and can stop, the workers an earlier one started.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
from pydantic import BaseModel, Field

from zeroloop.config import PoolSettings, Settings
from zeroloop.fleet.providers.base import Launched, LaunchSpec, Machine, MachineState, Provider, ProviderError

log = logging.getLogger(__name__)


class LocalOptions(BaseModel):
    """Options of a local pool."""

    model_config = {"extra": "forbid"}

    kill_after_s: float = Field(
        default=60.0, ge=0, description="a worker still running this long after SIGTERM is killed (seconds)"
    )
    log_dir: Path | None = Field(default=None, description="where worker logs go; unset: <data_dir>/logs")


# The shell that starts a worker in the background: the worker's parent until that shell exits.
_LAUNCHER = 'exec "$@" >>"$ZL_LOG" 2>&1 </dev/null & echo $!'


def _provider_id(process: psutil.Process) -> str:
    return f"{process.pid}:{process.create_time():.2f}"


class LocalProvider(Provider):
    """Starts and stops worker processes on this machine."""

    kind = "local"
    Options = LocalOptions

    def __init__(self, name: str, pool: PoolSettings, *, data_dir: Path) -> None:
        """`data_dir` is where worker logs go unless the pool's options name another directory."""
        super().__init__(name, pool)
        self.data_dir = data_dir
        self.log_dir: Path = self.options.log_dir or data_dir / "logs"
        self._sigterm_at: dict[str, float] = {}
        # pid -> this pool's node id (None: not one of this pool's workers). A process's environment
        # never changes, so each process is read once, not on every reconcile; pids gone are dropped.
        self._verdicts: dict[int, str | None] = {}

    @classmethod
    def from_settings(cls, name: str, pool: PoolSettings, settings: Settings) -> LocalProvider:
        """A local pool logs into the data directory's `logs`."""
        return cls(name, pool, data_dir=settings.data_dir)

    def launch(self, spec: LaunchSpec) -> Launched:
        """Start the worker process; ProviderError when it cannot be started."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **spec.env, "ZEROLOOP_CLUSTER__POOL": self.name, "ZEROLOOP_DATA_DIR": str(self.data_dir)}
        argv = [sys.executable, "-m", "zeroloop", *spec.argv[1:]] if spec.argv[0] == "zeroloop" else list(spec.argv)
        log_path = self.log_dir / f"{spec.node_id}.log"
        env["ZEROLOOP_LOGS__FILE"] = str(log_path)  # the worker writes and rotates it itself
        # A shell starts the worker in the background and prints its pid: the worker is then
        # not our child, so it outlives this process and nothing here has to reap it.
        script = _LAUNCHER
        try:
            done = subprocess.run(
                ["/bin/sh", "-c", script, "sh", *argv],
                env={**env, "ZL_LOG": str(log_path.with_suffix(".out"))},
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
                start_new_session=True,
            )
            process = psutil.Process(int(done.stdout.strip()))
            provider_id = _provider_id(process)
        except (OSError, ValueError, subprocess.SubprocessError, psutil.NoSuchProcess) as exc:
            raise ProviderError(f"local pool {self.name}: cannot start {argv[0]}: {exc}") from exc
        self._verdicts[process.pid] = spec.node_id
        log.info("local pool %s: started worker %s (pid %d)", self.name, spec.node_id, process.pid)
        return Launched(provider_id=provider_id, host=os.uname().nodename, price_per_hour=self.pool.price_per_hour)

    def _process(self, provider_id: str) -> psutil.Process | None:
        pid_text, _, _started = provider_id.partition(":")
        try:
            process = psutil.Process(int(pid_text))
            if _provider_id(process) != provider_id or process.status() == psutil.STATUS_ZOMBIE:
                return None
        except (ValueError, psutil.NoSuchProcess):
            return None
        return process

    def terminate(self, provider_id: str) -> None:
        """SIGTERM the worker (it drains); SIGKILL it when asked again after `kill_after_s`."""
        process = self._process(provider_id)
        if process is None:
            self._sigterm_at.pop(provider_id, None)
            return
        first = self._sigterm_at.setdefault(provider_id, time.monotonic())
        overdue = time.monotonic() - first >= self.options.kill_after_s
        try:
            process.send_signal(signal.SIGKILL if overdue else signal.SIGTERM)
        except psutil.NoSuchProcess:
            return
        except psutil.AccessDenied as exc:
            raise ProviderError(f"local pool {self.name}: may not signal pid {process.pid}: {exc}") from exc

    def kill(self, provider_id: str) -> None:
        """SIGKILL a worker at once (a forced stop); gone already is fine."""
        process = self._process(provider_id)
        if process is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGKILL)

    def machines(self) -> list[Machine]:
        """The live worker processes of this pool (started by this process or an earlier one).

        Only processes not seen before have their environment read; a reconcile on a machine
        with hundreds of processes costs one listing of /proc and a stat of each worker.
        """
        pids = psutil.pids()
        live = set(pids)
        for gone in [pid for pid in self._verdicts if pid not in live]:
            del self._verdicts[gone]
        found = []
        for pid in pids:
            if pid not in self._verdicts:
                self._verdicts[pid] = self._node_of(pid)
            node_id = self._verdicts[pid]
            if node_id is None:
                continue
            try:
                process = psutil.Process(pid)
                if process.status() == psutil.STATUS_ZOMBIE:
                    continue
                found.append(
                    Machine(
                        provider_id=_provider_id(process),
                        state=MachineState.RUNNING,
                        node_id=node_id or None,
                        detail=f"pid {process.pid}",
                    )
                )
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found

    def _node_of(self, pid: int) -> str | None:
        """The node id of a worker of this pool ("" when it names none), or None for any other process.

        A worker's own children (its job processes) inherit its environment: a process whose
        parent is in this pool (other than the shell that launched it) is part of that worker,
        not a machine of its own.
        """
        try:
            process = psutil.Process(pid)
            env = process.environ()
            parent = process.parent()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return None
        if not self._in_pool(env):
            return None  # not a worker, or another cluster's pool of the same name
        try:
            if parent is not None and self._in_pool(parent.environ()) and _LAUNCHER not in parent.cmdline():
                return None
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass  # a parent we may not read (init) or that is gone: not a worker of this pool
        return env.get("ZEROLOOP_CLUSTER__NODE_ID", "")

    def _in_pool(self, env: dict[str, str]) -> bool:
        return env.get("ZEROLOOP_CLUSTER__POOL") == self.name and env.get("ZEROLOOP_DATA_DIR") == str(self.data_dir)
