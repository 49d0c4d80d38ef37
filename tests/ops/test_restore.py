"""Restore that cannot destroy: every check before the store is touched, a copy to roll back to, and a verify that
proves a backup restores without touching the live store. On SQLite and PostgreSQL.

The bad backups are made as they arise: one from a newer zeroloop (its snapshot and backup.json
name a schema revision this code does not know), and one whose snapshot is not a database but
whose recorded sha256 matches it (written by a broken tool, or by hand).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.helpers import make_app
from zeroloop.app import App
from zeroloop.artifacts.transfer import hash_file
from zeroloop.errors import OperationsError, StoreUnavailable
from zeroloop.ops.backup import PRE_RESTORE, BackupInfo, Backups
from zeroloop.ops.restore import SCRATCH_PREFIX, Restorer
from zeroloop.store import migrate
from zeroloop.store.schema import jobs

CONFIG = "tic_tac_toe_2p"
NEWER = "0099"  # a revision a later zeroloop might have


@pytest.fixture
def app(store_url: str, tmp_path: Path, settings: object) -> Iterator[App]:
    with make_app(store_url, tmp_path) as opened:
        yield opened


def _jobs(app: App) -> int:
    with app.store.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(jobs)).scalar_one())


def _enqueue(app: App, count: int) -> None:
    for _ in range(count):
        app.queue.enqueue("selfplay", CONFIG, {"games": 1})


def _revision(app: App) -> str | None:
    return migrate.status(app.store).current


def _replace_snapshot(backups: Backups, info: BackupInfo, snapshot: Path, **recorded: object) -> None:
    """Put `snapshot` in the backup's place and record it in backup.json (its sha256 and size match)."""
    folder = Path(backups.root) / info.id
    (folder / info.store_file).write_bytes(snapshot.read_bytes())
    sha, size = hash_file(folder / info.store_file)
    described = json.loads((folder / "backup.json").read_text())
    described.update(store_sha256=sha, store_bytes=size, **recorded)
    described["files"][info.store_file] = size
    (folder / "backup.json").write_text(json.dumps(described))


def _newer_backup(app: App, backups: Backups, tmp_path: Path) -> BackupInfo:
    """A backup as a newer zeroloop takes it: the snapshot's schema and backup.json both say NEWER."""
    info = backups.create()
    snapshot = tmp_path / "newer-snapshot"
    if app.store.backend == "sqlite":
        snapshot.write_bytes((Path(backups.root) / info.id / info.store_file).read_bytes())
        conn = sqlite3.connect(snapshot)
        conn.execute("PRAGMA journal_mode=DELETE")  # the change goes into the file itself, not a -wal beside it
        conn.execute("UPDATE alembic_version SET version_num = ?", (NEWER,))
        conn.commit()
        conn.close()
    else:
        with app.store.transaction() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = :v"), {"v": NEWER})
        backups._pg_dump(snapshot)
        with app.store.transaction() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = :v"), {"v": migrate.head_revision()})
    _replace_snapshot(backups, info, snapshot, schema_revision=NEWER)
    return info


def test_a_backup_from_a_newer_zeroloop_is_refused_before_the_store_is_touched(app: App, tmp_path: Path) -> None:
    _enqueue(app, 3)
    backups = Backups(app.settings, app.store)
    newer = _newer_backup(app, backups, tmp_path)
    _enqueue(app, 2)
    restorer = Restorer(backups)
    for attempt in (restorer.restore, restorer.verify):
        with pytest.raises(OperationsError, match=rf"schema revision {NEWER}, newer than this zeroloop"):
            attempt(newer.id)
    disguised = backups.create()  # backup.json says this code's revision, the snapshot inside says NEWER
    folder = Path(backups.root)
    _replace_snapshot(backups, disguised, folder / newer.id / newer.store_file)
    for attempt in (restorer.restore, restorer.verify):
        with pytest.raises(OperationsError, match=rf"its snapshot is at schema revision {NEWER} but backup\.json"):
            attempt(disguised.id)
    assert _jobs(app) == 5 and _revision(app) == migrate.head_revision()  # the store is as it was
    assert [info.label for info in backups.ls()] == ["", ""]  # and no copy was needed


def test_a_snapshot_that_is_no_database_is_refused_though_its_sha256_matches(app: App, tmp_path: Path) -> None:
    _enqueue(app, 4)
    backups = Backups(app.settings, app.store)
    info = backups.create()
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"this is not a database, whatever backup.json says" * 100)
    _replace_snapshot(backups, info, garbage)
    restorer = Restorer(backups)
    kind = "a zeroloop SQLite store" if app.store.backend == "sqlite" else "a pg_dump archive"
    for attempt in (restorer.restore, restorer.verify):
        with pytest.raises(OperationsError, match=rf"does not open as {kind}"):
            attempt(info.id)
    assert _jobs(app) == 4 and _revision(app) == migrate.head_revision()


def test_restore_keeps_the_store_as_it_was_and_can_roll_back(app: App, tmp_path: Path) -> None:
    _enqueue(app, 2)
    backups = Backups(app.settings, app.store)
    older = backups.create()
    _enqueue(app, 5)  # work done after the backup
    restorer = Restorer(backups)

    report = restorer.restore(older.id, force=True)  # force: this test's own App holds no lease, but say so
    assert _jobs(app) == 2
    assert report.pre_restore is not None
    (kept,) = [info for info in backups.ls() if info.label == PRE_RESTORE]
    assert kept.id == report.pre_restore

    rolled_back = restorer.restore(report.pre_restore)  # the way back
    assert _jobs(app) == 7 and rolled_back.backup.id == kept.id


def test_a_restore_that_fails_after_replacing_the_store_puts_it_back(
    app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _enqueue(app, 2)
    backups = Backups(app.settings, app.store)
    older = backups.create()
    _enqueue(app, 3)
    replace = Restorer._replace

    def replace_then_fail(self: Restorer, checked: object) -> str | None:
        replace(self, checked)  # type: ignore[arg-type]  # the store is replaced by the backup ...
        raise StoreUnavailable("the store's disk went away")  # ... and then the restore fails

    monkeypatch.setattr(Restorer, "_replace", replace_then_fail)
    with pytest.raises(OperationsError, match=r"failed \(the store's disk went away\); the store was put back"):
        Restorer(backups).restore(older.id)
    assert _jobs(app) == 5 and _revision(app) == migrate.head_revision()


def test_verify_proves_a_backup_restores_without_touching_the_live_store(app: App, tmp_path: Path) -> None:
    _enqueue(app, 3)
    backups = Backups(app.settings, app.store)
    info = backups.create()
    _enqueue(app, 1)
    live_file = Path(app.store.url.database or "") if app.store.backend == "sqlite" else None
    before = hash_file(live_file)[0] if live_file else None

    report = Restorer(backups).verify(info.id)
    assert report.rows["jobs"] == 3 and report.upgraded_from is None and report.missing_artifacts == []
    assert _jobs(app) == 4  # the live store goes on as it was
    if live_file is not None:
        assert hash_file(live_file)[0] == before
    else:
        with app.store.read() as conn:
            left = conn.execute(
                sa.text("SELECT count(*) FROM pg_database WHERE datname LIKE :p"), {"p": SCRATCH_PREFIX + "%"}
            ).scalar_one()
        assert left == 0  # the scratch database is dropped

    damaged = Path(backups.root) / info.id / info.store_file
    damaged.write_bytes(damaged.read_bytes()[:-10])
    with pytest.raises(OperationsError, match="does not match its recorded sha256"):
        Restorer(backups).verify(info.id)


def test_the_verify_command_reports_a_good_backup(
    settings: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import re

    from typer.testing import CliRunner

    from zeroloop.cli.main import app as cli

    monkeypatch.setenv("ZEROLOOP_DATA_DIR", str(tmp_path / "cli"))
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    created = runner.invoke(cli, ["backup", "create"])
    backup_id = re.search(r"^backup (\S+):", created.output, re.M)
    assert backup_id, created.output
    verified = runner.invoke(cli, ["backup", "verify", backup_id.group(1)])
    assert verified.exit_code == 0, verified.output
    assert f"backup {backup_id.group(1)} restores: sqlite schema {migrate.head_revision()}" in verified.output
    restored = runner.invoke(cli, ["backup", "restore", backup_id.group(1), "--yes"], env={"COLUMNS": "300"})
    assert restored.exit_code == 0, restored.output
    pre = re.search(r"the store as it was is kept as (\S+): `zeroloop backup restore \1` rolls back", restored.output)
    assert pre, restored.output
