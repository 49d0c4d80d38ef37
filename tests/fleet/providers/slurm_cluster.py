"""A real single-host Slurm for tests: munged, slurmctld and slurmd on loopback, in a temporary directory.

`slurm_cluster` (session-scoped) writes its own slurm.conf (no cgroups: proctrack/linuxproc,
task/none; this host as the only node, with the CPUs and memory `slurmd -C` finds; two
partitions, `debug` (the default) and `zl`; free loopback ports), a fresh munge key and
its own munge socket, starts the three daemons in the foreground as children of the test
process, and waits (bounded) until sinfo shows the node idle. Afterwards it cancels every
job, stops the daemons and removes the directory. Commands reach this Slurm through
`SLURM_CONF=<dir>/slurm.conf` (`cluster.env`).

Where Slurm cannot start (binaries missing, not root) the tests that need it skip with the
reason; under CI=true they fail instead.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fleet.providers.contract import wait_until

DAEMONS = ("/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "sinfo")
PARTITIONS = ("debug", "zl")
START_TIMEOUT_S = 45.0
STOP_TIMEOUT_S = 15.0
# What `slurmd -C` reports that slurm.conf's NodeName line takes.
_NODE_FIELDS = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")


class SlurmUnavailable(Exception):
    """Slurm cannot run here; the message says why."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class SlurmCluster:
    """A running single-host Slurm: its directory, config, node name and the environment that reaches it."""

    root: Path
    node: str
    partitions: tuple[str, ...] = PARTITIONS
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        """This cluster's slurm.conf."""
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """The process environment with SLURM_CONF pointing at this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *argv: str, timeout_s: float = 15.0) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client command against this cluster."""
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout_s, check=False)

    def logs(self, chars: int = 3000) -> str:
        """The tails of the daemons' logs, for failure messages."""
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)

    def jobs(self) -> list[str]:
        """Ids of the jobs Slurm still runs or queues."""
        done = self.run("squeue", "--noheader", "--format=%i")
        return done.stdout.split() if done.returncode == 0 else []

    # -- start and stop ------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.root / "log" / f"{name}.out").open("wb")
        with log:
            self.processes[name] = subprocess.Popen(
                argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def _died(self) -> str | None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                return f"{name} exited with status {process.returncode}"
        return None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Write the config, start munged, slurmctld and slurmd; SlurmUnavailable when the node never gets idle."""
        for sub in ("state", "spool", "log", "munge"):
            (self.root / sub).mkdir()
        munge = self.root / "munge"
        munge.chmod(0o755)  # munged wants its socket's directory searchable by all
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        socket_path = munge / "socket"
        self.conf.write_text(self._config(socket_path))
        self._spawn(
            "munged",
            [
                DAEMONS[0],
                "--foreground",
                "--force",
                f"--socket={socket_path}",
                f"--key-file={key}",
                f"--log-file={self.root / 'log' / 'munged.log'}",
                f"--pid-file={munge / 'munged.pid'}",
                f"--seed-file={munge / 'munged.seed'}",
            ],
        )
        if not wait_until(lambda: socket_path.exists() or self._died() is not None, timeout_s):
            raise SlurmUnavailable(f"munged made no socket within {timeout_s:g} s\n{self.logs()}")
        self._spawn("slurmctld", [DAEMONS[1], "-D", "-i", "-f", str(self.conf)])
        self._spawn("slurmd", [DAEMONS[2], "-D", "-N", self.node, "-f", str(self.conf)])
        state = ""

        def idle() -> bool:
            nonlocal state
            if self._died() is not None:
                return True
            try:
                done = self.run("sinfo", "--noheader", f"--nodes={self.node}", "--format=%T", timeout_s=2)
            except subprocess.TimeoutExpired:
                state = "sinfo got no answer"
                return False
            state = done.stdout.strip() or done.stderr.strip()
            return done.returncode == 0 and state.split("\n")[0] == "idle"

        if not wait_until(idle, timeout_s, interval_s=0.3) or self._died() is not None:
            why = self._died() or f"node {self.node} not idle within {timeout_s:g} s (sinfo: {state!r})"
            raise SlurmUnavailable(f"{why}\n{self.logs()}")

    def _config(self, munge_socket: Path) -> str:
        detected = subprocess.run([DAEMONS[2], "-C"], capture_output=True, text=True, timeout=15, check=False)
        values = dict(re.findall(r"(\w+)=(\S+)", detected.stdout))
        missing = [name for name in _NODE_FIELDS if name not in values]
        if detected.returncode != 0 or missing:
            raise SlurmUnavailable(f"slurmd -C did not describe this host: {detected.stdout} {detected.stderr}")
        shape = " ".join(f"{name}={values[name]}" for name in _NODE_FIELDS)
        root = self.root
        lines = [
            "ClusterName=zeroloop-test",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={munge_socket}",
            f"SlurmUser={pwd.getpwuid(os.getuid()).pw_name}",
            f"StateSaveLocation={root / 'state'}",
            f"SlurmdSpoolDir={root / 'spool'}",
            f"SlurmctldPidFile={root / 'slurmctld.pid'}",
            f"SlurmdPidFile={root / 'slurmd.pid'}",
            f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
            # No cgroups: processes are tracked by parentage, tasks are not confined.
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "MpiDefault=none",
            "MailProg=/bin/true",
            "SchedulerType=sched/builtin",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",  # memory is checked, not consumed: small jobs share the node
            "ReturnToService=2",
            "InactiveLimit=0",
            "KillWait=10",  # a cancelled worker gets this long between SIGTERM and SIGKILL to drain (seconds)
            "MinJobAge=300",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            f"NodeName={self.node} NodeAddr=127.0.0.1 NodeHostname={self.node} {shape} State=UNKNOWN",
            f"PartitionName={PARTITIONS[0]} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
            f"PartitionName={PARTITIONS[1]} Nodes={self.node} MaxTime=INFINITE State=UP",
        ]
        return "\n".join(lines) + "\n"

    def stop(self) -> None:
        """Cancel every job, stop the daemons (SIGTERM, then SIGKILL after STOP_TIMEOUT_S), remove the directory."""
        if "slurmctld" in self.processes and self._died() is None:
            self.run("scancel", f"--user={pwd.getpwuid(os.getuid()).pw_name}")
            wait_until(lambda: not self.jobs(), STOP_TIMEOUT_S)
        for name in ("slurmd", "slurmctld", "munged"):
            process = self.processes.get(name)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_S)
        shutil.rmtree(self.root, ignore_errors=True)


def why_unavailable() -> str | None:
    """Why this machine cannot run the test Slurm, or None when it can try."""
    missing = [path for path in DAEMONS if not os.access(path, os.X_OK)]
    missing += [name for name in CLIENTS if shutil.which(name) is None]
    if missing:
        return f"Slurm is not installed ({', '.join(missing)} missing): apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "the test Slurm runs its daemons as root (SlurmUser=root); run the tests as root"
    return None


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (the Slurm tests may not skip under CI=true)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A running single-host Slurm for the session; skipped (failed under CI=true) where it cannot start."""
    reason = why_unavailable()
    if reason is not None:
        _unavailable(reason)
    # A short path: munge's socket path must fit in a unix socket address (108 bytes).
    cluster = SlurmCluster(Path(tempfile.mkdtemp(prefix="zl-slurm-", dir="/tmp")), socket.gethostname().split(".")[0])
    try:
        cluster.start()
    except (SlurmUnavailable, OSError, subprocess.SubprocessError) as exc:
        cluster.stop()
        _unavailable(f"the test Slurm did not start: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()
