"""Backups end to end: a real pipeline is backed up, its store wiped and restored, and the loop resumes."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.helpers import run_async
from tests.ops.loop import start, tiny_settings
from zeroloop.app import App
from zeroloop.artifacts.transfer import ArtifactKind
from zeroloop.config import BackupSettings
from zeroloop.errors import OperationsError
from zeroloop.ops.backup import Backups
from zeroloop.ops.restore import Restorer
from zeroloop.store import migrate
from zeroloop.store.database import Store
from zeroloop.store.schema import models

pytestmark = pytest.mark.slow


def _wipe(app: App, settings_store_url: str) -> None:
    """Lose the database: every table dropped (PostgreSQL) or the file and its log deleted (SQLite)."""
    app.close()
    if app.store.backend == "sqlite":
        path = Path(app.store.url.database or "")
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        return
    with Store(settings_store_url) as store, store.transaction() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))


def _models(app: App) -> list[tuple[str, str]]:
    with app.store.read() as conn:
        return sorted((row.id, row.stage) for row in conn.execute(sa.select(models.c.id, models.c.stage)))


@run_async
async def test_a_restored_backup_resumes_the_pipeline(store_url: str, tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path / "data", store_url)
    with App(settings, upgrade=False) as app:
        loop = start(app)
        try:
            await loop.drive_until(lambda state: state["iteration"] >= 1)  # one whole round
            at_backup = loop.state()
            models_at_backup = _models(app)
            info = Backups(settings, app.store).create()  # taken while the loop runs
            await loop.drive_until(lambda state: state["samples_total"] > at_backup["samples_total"])
        finally:
            loop.close()
        assert models_at_backup, "the round registered no model"
        assert info.artifacts > 0 and info.schema_revision == migrate.head_revision()
        _wipe(app, store_url)

    with Store.for_settings(settings) as store:
        report = Restorer(Backups(settings, store)).restore(info.id)
    assert report.missing_artifacts == []

    with App(settings, upgrade=False) as app:
        loop = start(app)  # as a restarted coordinator does: the pipeline exists, nothing changes
        try:
            restored = loop.state()
            assert (restored["iteration"], restored["samples_total"], restored["current_model_id"]) == (
                at_backup["iteration"],
                at_backup["samples_total"],
                at_backup["current_model_id"],
            )
            assert _models(app) == models_at_backup
            await loop.drive_until(lambda state: state["iteration"] > at_backup["iteration"])
        finally:
            loop.close()
        assert len(_models(app)) > len(models_at_backup)  # the next round trained a new model


def test_backups_are_listed_pruned_and_refused_when_damaged_or_in_use(tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path / "data")
    with App(settings) as app:
        backups = Backups(settings, app.store)
        first, second, third = (backups.create() for _ in range(3))
        (tmp_path / "data/backups/zz-unfinished").mkdir()  # a backup that died before its backup.json
        assert [info.id for info in backups.ls()] == [first.id, second.id, third.id]
        assert backups.prune(2) == [first.id]
        assert [info.id for info in backups.ls()] == [second.id, third.id]

        app.leases.acquire("leader")  # a coordinator runs against this store
        with pytest.raises(OperationsError, match="stop every zeroloop process first"):
            Restorer(backups).restore(third.id)
        with pytest.raises(OperationsError, match="no finished backup 'nope'"):
            backups.get("nope")

        folder = tmp_path / "data/backups" / third.id
        info = json.loads((folder / "backup.json").read_text())
        (folder / info["store_file"]).write_bytes(b"not the snapshot")
        with pytest.raises(OperationsError, match="does not match its recorded sha256"):
            Restorer(backups).restore(third.id, force=True)


def test_a_postgresql_backup_without_pg_dump_is_one_clear_error(
    pg_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # neither pg_dump on the PATH ...
    monkeypatch.setattr("zeroloop.ops.backup.glob.glob", lambda pattern: [])  # ... nor under /usr/lib/postgresql
    settings = tiny_settings(tmp_path / "data", pg_store.display_url)
    with pytest.raises(OperationsError, match=r"pg_dump is not installed.*backup\.pg_bin_dir"):
        Backups(settings, pg_store).create()


def test_the_backup_commands_create_list_and_restore(
    settings: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from zeroloop.cli.main import app as cli

    monkeypatch.setenv("ZEROLOOP_DATA_DIR", str(tmp_path / "cli"))
    runner = CliRunner()
    nothing = runner.invoke(cli, ["backup", "create"])
    assert isinstance(nothing.exception, OperationsError) and "nothing to back up" in str(nothing.exception)
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    created = runner.invoke(cli, ["backup", "create", "--keep", "1"])
    assert created.exit_code == 0, created.output
    found = re.search(r"^backup (\d{8}T\d{6}Z-[0-9a-f]{6}):", created.output, re.M)
    assert found, created.output
    backup_id = found.group(1)
    listed = runner.invoke(cli, ["backup", "ls"], env={"COLUMNS": "200"})
    assert backup_id in listed.output
    cancelled = runner.invoke(cli, ["backup", "restore", backup_id], input="n\n")
    assert cancelled.exit_code == 1 and "nothing changed" in cancelled.output
    restored = runner.invoke(cli, ["backup", "restore", backup_id, "--yes"])
    assert restored.exit_code == 0, restored.output
    assert f"restored backup {backup_id}" in restored.output


def test_unusable_locations_foreign_backups_and_bad_ids_are_one_clear_error(tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path / "data")
    web = settings.model_copy(update={"backup": BackupSettings(url="http://example.com/b")})
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the backups should go")
    unwritable = settings.model_copy(update={"backup": BackupSettings(url=blocked.as_uri())})
    with App(settings) as app:
        with pytest.raises(OperationsError, match=r"backup location 'http://example\.com/b' is unusable"):
            Backups(web, app.store)
        with pytest.raises(OperationsError, match=r"cannot write backup .* check backup\.url"):
            Backups(unwritable, app.store).create()
        backups = Backups(settings, app.store)
        with pytest.raises(OperationsError, match="is not a backup id"):
            backups.get("../elsewhere")
        info = backups.create()
        described = tmp_path / "data/backups" / info.id / "backup.json"
        original = described.read_text()
        described.write_text(original.replace('"store.sqlite"', '"../../zeroloop.db"'))
        with pytest.raises(OperationsError, match="names no known store file"):
            Restorer(backups).restore(info.id)
        foreign = original.replace('"sqlite"', '"postgresql"').replace('"store.sqlite"', '"store.pgdump"')
        described.write_text(foreign)
        with pytest.raises(OperationsError, match="of a postgresql store and this store is sqlite"):
            Restorer(backups).restore(info.id)


def test_a_file_that_is_no_zeroloop_store_is_not_backed_up(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    sqlite3.connect(tmp_path / "data/zeroloop.db").close()  # an empty database: no schema
    settings = tiny_settings(tmp_path / "data")
    with Store.for_settings(settings) as store, pytest.raises(OperationsError, match="not a zeroloop store"):
        Backups(settings, store).create()


def test_a_failing_pg_dump_is_one_clear_error(pg_store: Store, tmp_path: Path) -> None:
    missing = pg_store.url.set(database="zeroloop_no_such_database").render_as_string(hide_password=False)
    settings = tiny_settings(tmp_path / "data", missing)
    with Store(missing) as store, pytest.raises(OperationsError, match=r"pg_dump failed: .*zeroloop_no_such_database"):
        Backups(settings, store).create()


def test_a_restore_reports_manifest_artifacts_the_location_lacks(tmp_path: Path) -> None:
    settings = tiny_settings(tmp_path / "data")
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    with App(settings) as app:
        kept = app.artifacts.put(model, ArtifactKind.MODEL).sha256
        model.write_bytes(b"other weights")
        lost = app.artifacts.put(model, ArtifactKind.MODEL).sha256
        info = Backups(settings, app.store).create()
        Path(app.artifacts.location(ArtifactKind.MODEL, lost).removeprefix("file://")).unlink()
        restorer = Restorer(Backups(settings, app.store))
        with pytest.raises(OperationsError, match=r"1 of the manifest's 2 files \(50%\) are missing"):
            restorer.restore(info.id)  # more than artifacts.missing_max_pct: the location looks wrong
        report = restorer.restore(info.id, force=True)
    assert report.missing_artifacts == [lost] and kept != lost
    assert report.upgraded_from is None


def test_a_backup_of_an_older_schema_is_upgraded_on_restore(tmp_path: Path) -> None:
    from alembic import command

    settings = tiny_settings(tmp_path / "data")
    (tmp_path / "data").mkdir()
    with Store.for_settings(settings) as store:
        with store.transaction() as conn:
            command.upgrade(migrate._config(conn), "0004")
        backups = Backups(settings, store)
        info = backups.create()
        assert info.schema_revision == "0004"
        report = Restorer(backups).restore(info.id)
        assert report.upgraded_from == "0004"
        assert migrate.status(store).up_to_date
