"""A PostgreSQL server of a test's own, which the test may stop and start again (as scripts/with-postgres runs one).

Debian's server binaries, a fresh cluster in a temporary directory (initdb as user
postgres when running as root), trust authentication, a fixed free loopback port kept
across restarts. Missing binaries skip the test with the reason (and fail under CI=true).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest


def _bindir() -> Path:
    for candidate in [
        os.environ.get("PG_BINDIR", ""),
        "/usr/lib/postgresql/15/bin",
        *glob.glob("/usr/lib/postgresql/*/bin"),
    ]:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    reason = "no PostgreSQL server binaries (initdb) found; install Debian's postgresql-15"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgServer:
    """One throwaway PostgreSQL server; `url` names its database. Stop and start it as often as needed."""

    def __init__(self, workdir: Path) -> None:
        self.bindir = _bindir()
        self.workdir = workdir
        self.data = workdir / "data"
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/zeroloop"
        self._as: list[str] = []
        workdir.mkdir(parents=True, exist_ok=True)
        if os.getuid() == 0:
            shutil.chown(workdir, "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "zeroloop")

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run(
            [*self._as, str(self.bindir / tool), *args], check=False, capture_output=True, timeout=120
        )
        if done.returncode:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.decode(errors='replace')[-2000:]}")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.workdir / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-w", "-t", "60", "-o", options, "start")

    def stop(self) -> None:
        """Stop the server at once, cutting every connection (`-m fast`)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def close(self) -> None:
        """Stop the server if it runs; the caller removes the directory."""
        subprocess.run(
            [*self._as, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
            check=False,
            capture_output=True,
            timeout=60,
        )
