"""Point-in-time recovery of a PostgreSQL store with pgBackRest, as docs/operations.md describes it.

A throwaway PostgreSQL server archives its write-ahead log to a local pgBackRest repository
(`archive_command = pgbackrest archive-push`). After a full backup, zeroloop records job A,
the time is noted, then job B. The server is stopped and restored to the noted time: job A
is there and job B is not, to the transaction. Needs Debian's `pgbackrest` and PostgreSQL
server packages; without them the test skips (and fails under CI=true).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.faults.pgserver import PgServer
from zeroloop.app import App
from zeroloop.config import Settings, StoreSettings
from zeroloop.store import migrate
from zeroloop.store.database import Store
from zeroloop.store.schema import jobs

STANZA = "zeroloop"
TOOL_TIMEOUT_S = 300  # longest one pgbackrest command may take (seconds)


def _pgbackrest() -> str:
    found = shutil.which("pgbackrest")
    if found is None:
        reason = "pgbackrest is not installed (apt-get install pgbackrest)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


class Archived:
    """A PostgreSQL server whose WAL goes to a pgBackRest repository in the same temporary directory."""

    def __init__(self, workdir: Path) -> None:
        self.tool = _pgbackrest()
        self.server = PgServer(workdir / "pg")
        self.config = workdir / "pgbackrest.conf"
        repo = workdir / "repo"
        for folder in (repo, workdir / "log", workdir / "lock"):
            folder.mkdir(parents=True)
            if os.getuid() == 0:
                shutil.chown(folder, "postgres")
        self.config.write_text(
            "[global]\n"
            f"repo1-path={repo}\nlog-path={workdir / 'log'}\nlock-path={workdir / 'lock'}\n"
            "start-fast=y\nlog-level-console=warn\n"
            f"[{STANZA}]\n"
            f"pg1-path={self.server.data}\npg1-port={self.server.port}\npg1-socket-path={self.server.workdir}\n"
            "pg1-user=postgres\n"
        )
        with (self.server.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "wal_level = replica\narchive_mode = on\n"
                f"archive_command = '{self.tool} --config={self.config} --stanza={STANZA} archive-push %p'\n"
            )
        self.server.stop()
        self.server.start()  # archive_mode takes a restart

    def run(self, *args: str) -> str:
        """Run pgbackrest (as the server's user) with this repository; its output."""
        command = [*self.server._as, self.tool, f"--config={self.config}", f"--stanza={STANZA}", *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False)
        assert done.returncode == 0, f"pgbackrest {' '.join(args)} failed: {done.stderr or done.stdout}"
        return done.stdout


@pytest.fixture
def archived() -> Iterator[Archived]:
    """The server and its repository, in a directory the postgres user can reach (the tests may run as root)."""
    _pgbackrest()
    workdir = Path(tempfile.mkdtemp(prefix="zeroloop-pitr-"))
    workdir.chmod(0o755)
    server = None
    try:
        server = Archived(workdir)
        yield server
    finally:
        if server is not None:
            server.server.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _jobs(url: str) -> set[str]:
    with Store(url) as store, store.read() as conn:
        return {str(row.config_key) for row in conn.execute(sa.select(jobs.c.config_key))}


def test_a_postgresql_store_recovers_to_a_point_in_time(archived: Archived, tmp_path: Path) -> None:
    url = archived.server.url
    archived.run("stanza-create")
    archived.run("check")  # the archive_command works: a WAL segment reached the repository
    with Store(url) as store:
        migrate.upgrade(store)
    archived.run("--type=full", "backup")

    settings = Settings(data_dir=tmp_path / "data", store=StoreSettings(url=url))
    with App(settings, upgrade=False) as app:
        app.queue.enqueue("selfplay", "before_2p", {"games": 1})
        with app.store.read() as conn:
            target = conn.execute(sa.text("SELECT clock_timestamp()::text")).scalar_one()
        app.queue.enqueue("selfplay", "after_2p", {"games": 1})
    archived.run("check")  # switches to a new WAL segment and waits until the one holding both jobs is archived
    assert _jobs(url) == {"before_2p", "after_2p"}

    (backup,) = json.loads(archived.run("--output=json", "info"))[0]["backup"]
    archived.server.stop()  # the store is lost, or a bad change must be undone: back to `target`
    # The backup named: pgBackRest picks one by its stop time in whole seconds, and this test's
    # target may fall in the second the backup ended.
    restore = ["--delta", f"--set={backup['label']}", "--type=time", f"--target={target}", "--target-action=promote"]
    archived.run(*restore, "restore")
    archived.server.start()
    assert _jobs(url) == {"before_2p"}  # what was committed by then, and nothing after
    with Store(url) as store:
        assert migrate.status(store).up_to_date
