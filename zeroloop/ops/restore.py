"""Restore and verify a backup: every check before the store is touched, a copy of the store as it was, a way back.

`restore` checks everything the backup records before it changes anything: a store file
this backend restores, a schema revision this code knows (a backup from a newer zeroloop
is refused: it would leave a store this code cannot open), both files against their
sha256, that the snapshot opens as what it claims (SQLite: `PRAGMA integrity_check`;
PostgreSQL: `pg_restore --list`), that the revision inside it is the one recorded, that
the manifest holds the artifacts recorded, and that the artifact location looks right for
it (see zeroloop.ops.gc.location_refusal; `force` overrides that one, and the check for
running processes). Then it keeps a copy of the store as it is (a `pre-restore` backup;
a SQLite file that is no zeroloop store is moved aside instead), replaces the store,
upgrades it when the backup is older than this code, and on any failure in between puts
the copy back. `zeroloop backup restore <pre-restore id>` rolls a finished restore back.

`verify` proves a backup restores without touching the live store: it runs the same
checks, restores the snapshot into a scratch store (a temporary SQLite file, or a scratch
database created on the same PostgreSQL server and dropped afterwards), upgrades it there,
and counts what it holds against what the backup recorded.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from zeroloop.artifacts.transfer import open_location
from zeroloop.errors import OperationsError, StoreError
from zeroloop.ops.backup import PRE_RESTORE, STORE_FILES, BackupInfo, Backups, pg_connection, pg_tool, run_pg
from zeroloop.ops.gc import location_refusal
from zeroloop.store import migrate
from zeroloop.store.database import Store, sqlite_path
from zeroloop.store.queries import leases as lease_queries
from zeroloop.store.queries import maintenance as queries
from zeroloop.store.schema import metadata

log = logging.getLogger(__name__)

SCRATCH_PREFIX = "zeroloop_verify_"  # name of a scratch PostgreSQL database `verify` creates (and drops)


@dataclass(frozen=True)
class Checked:
    """A backup that passed every check: its snapshot and manifest entries, fetched into a scratch directory."""

    info: BackupInfo
    snapshot: Path
    entries: list[dict[str, Any]]


@dataclass(frozen=True)
class RestoreReport:
    """What a restore did: the backup, the schema before any upgrade, artifacts the location lacks, and the way back.

    `pre_restore` is the id of the backup of the store as it was (restore it to roll back), or,
    for a SQLite file that was no zeroloop store, the path it was moved aside to; None when
    there was no store to keep.
    """

    backup: BackupInfo
    upgraded_from: str | None
    missing_artifacts: list[str]
    pre_restore: str | None


@dataclass(frozen=True)
class VerifyReport:
    """A backup shown to restore: its revision (and what it upgrades from), rows per table, missing artifacts."""

    backup: BackupInfo
    upgraded_from: str | None
    rows: dict[str, int]
    missing_artifacts: list[str]


class Restorer:
    """Checks, restores and verifies the backups of one deployment (every zeroloop process stopped to restore)."""

    def __init__(self, backups: Backups) -> None:
        self.backups = backups
        self.settings = backups.settings
        self.store = backups.store

    # --- checks ----------------------------------------------------------------------------------

    def check(self, backup_id: str, scratch: Path) -> Checked:
        """Everything the backup records, checked; its files fetched into `scratch`. OperationsError on the first
        that does not hold; nothing is changed either way."""
        info = self.backups.get(backup_id)
        if STORE_FILES.get(info.backend) != info.store_file:
            raise OperationsError(f"backup {backup_id}: backup.json names no known store file; restore another backup")
        if info.backend != self.store.backend:
            raise OperationsError(
                f"backup {backup_id} is of a {info.backend} store and this store is {self.store.backend}: "
                f"restore it into a {info.backend} store (set store.url)"
            )
        if info.schema_revision is None:
            raise OperationsError(f"backup {backup_id} records no schema revision: it is not a zeroloop store")
        if not migrate.is_known(info.schema_revision):
            raise OperationsError(
                f"backup {backup_id} has schema revision {info.schema_revision}, newer than this zeroloop (which "
                f"knows up to {migrate.head_revision()}): restore it with the zeroloop that took it, or a newer one"
            )
        snapshot, manifest = self.backups.fetch(info, scratch)
        sqlite = info.backend == "sqlite"
        inside = self._sqlite_revision(info, snapshot) if sqlite else self._pg_revision(info, snapshot)
        if inside != info.schema_revision:
            raise OperationsError(
                f"backup {backup_id}: its snapshot is at schema revision {inside} but backup.json records "
                f"{info.schema_revision}: restore another backup"
            )
        try:
            entries = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
        except ValueError as exc:
            raise OperationsError(f"backup {backup_id}: its manifest is not JSON lines ({exc})") from None
        if len(entries) != info.artifacts:
            raise OperationsError(
                f"backup {backup_id}: its manifest holds {len(entries)} artifacts, backup.json records {info.artifacts}"
            )
        return Checked(info, snapshot, entries)

    def _sqlite_revision(self, info: BackupInfo, snapshot: Path) -> str | None:
        """The schema revision inside a SQLite snapshot, after it proved a sound database."""
        try:
            conn = sqlite3.connect(f"{snapshot.as_uri()}?mode=ro", uri=True)
            try:
                problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
                if problems != ["ok"]:
                    raise OperationsError(
                        f"backup {info.id}: its SQLite snapshot fails the integrity check ({problems[0]}): "
                        "restore another backup"
                    )
                row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise OperationsError(
                f"backup {info.id}: its snapshot {info.store_file} does not open as a zeroloop SQLite store ({exc}): "
                "restore another backup"
            ) from None
        return None if row is None else str(row[0])

    def _pg_revision(self, info: BackupInfo, dump: Path) -> str | None:
        """The schema revision inside a pg_dump archive, after pg_restore read its table of contents."""
        _args, env = pg_connection(self.store.url)
        tool = pg_tool("pg_restore", self.settings)
        try:
            contents = run_pg([tool, "--list", str(dump)], env)
            data = run_pg([tool, "--data-only", "--table=alembic_version", "--file=-", str(dump)], env)
        except OperationsError as exc:
            raise OperationsError(
                f"backup {info.id}: its snapshot {info.store_file} does not open as a pg_dump archive ({exc}): "
                "restore another backup"
            ) from None
        if "TABLE DATA public alembic_version" not in contents:
            raise OperationsError(f"backup {info.id}: its snapshot holds no zeroloop schema: restore another backup")
        lines = data.splitlines()
        for index, line in enumerate(lines):
            if line.startswith("COPY public.alembic_version") and index + 1 < len(lines):
                value = lines[index + 1].strip()
                return None if value == "\\." else value
        return None

    def _location_refusal(self, entries: list[dict[str, Any]], missing: list[str]) -> str | None:
        fs, root = open_location(self.settings.artifacts_url, self.settings.artifacts.storage_options)
        named = sum(1 for entry in entries if _shared_copy(entry) is not None)
        limit = self.settings.artifacts.missing_max_pct
        return location_refusal(self.settings.artifacts_url, bool(fs.exists(root)), named, len(missing), limit)

    def missing_artifacts(self, entries: list[dict[str, Any]]) -> list[str]:
        """The manifest entries whose shared copy the configured artifact location lacks."""
        fs, root = open_location(self.settings.artifacts_url, self.settings.artifacts.storage_options)
        missing = []
        for entry in entries:
            location = _shared_copy(entry)
            if location is None:
                continue
            path = location.split("://", 1)[1] if "://" in location else f"{root}/{location}"
            if not fs.exists(path):
                missing.append(entry["sha256"])
        return missing

    # --- restore ---------------------------------------------------------------------------------

    def restore(self, backup_id: str, *, force: bool = False) -> RestoreReport:
        """Check backup `backup_id`, keep a copy of the store as it is, and put the backup in its place.

        Refused while a leader lease is live in the current store (a coordinator still runs),
        or when the artifact location looks wrong for the backup's manifest, unless `force`.
        On a failure after the copy was taken, the store is put back as it was.
        """
        if not force:
            self._refuse_while_running()
        with tempfile.TemporaryDirectory(prefix="zeroloop-restore-") as scratch:
            checked = self.check(backup_id, Path(scratch))
            missing = self.missing_artifacts(checked.entries)
            refusal = self._location_refusal(checked.entries, missing)
            if refusal is not None and not force:
                raise OperationsError(
                    f"restore of {backup_id} refused, nothing changed: {refusal}; point artifacts.url at the location "
                    "the backup was taken with, or pass --force to restore anyway"
                )
            pre_restore, moved = self._keep_current()
            try:
                upgraded_from = self._replace(checked)
            except Exception as exc:
                self._roll_back(pre_restore, moved)
                way_back = pre_restore or moved
                raise OperationsError(
                    f"restore of {backup_id} failed ({exc}); the store was put back as it was"
                    + (f" (from {way_back})" if way_back else "")
                ) from exc
        if missing:
            log.warning(
                "restore %s: %d artifact(s) of the manifest are not in the artifact location", backup_id, len(missing)
            )
        log.info("restored backup %s; the store as it was: %s", backup_id, pre_restore or moved or "none")
        return RestoreReport(checked.info, upgraded_from, missing, pre_restore or (str(moved) if moved else None))

    def _refuse_while_running(self) -> None:
        try:
            with self.store.read() as conn:
                leases = lease_queries.list_leases(conn)
        except StoreError:
            return  # a wiped, damaged or schema-less store: nothing runs against it
        now = self.backups.clock()
        live = [lease for lease in leases if lease["holder"] and lease["expires_at"] > now]
        if live:
            held = ", ".join(f"{lease['name']} by {lease['holder']}" for lease in live)
            raise OperationsError(
                f"the store is in use (lease {held}): stop every zeroloop process first, or pass --force"
            )

    def _keep_current(self) -> tuple[str | None, Path | None]:
        """A copy of the store as it is: a pre-restore backup's id, or (a SQLite file no zeroloop store) its files
        moved aside; (None, None) when there is no store to keep."""
        if self.store.backend == "sqlite":
            path = sqlite_path(self.store.url)
            if not path.exists():
                return None, None
            try:
                return self.backups.create(label=PRE_RESTORE).id, None
            except OperationsError as exc:  # damaged, or not a zeroloop store: keep its bytes as they are
                self.store.close()
                aside = path.with_name(f"{path.name}.pre-restore-{uuid.uuid4().hex[:8]}")
                for suffix in ("", "-wal", "-shm"):
                    if path.with_name(path.name + suffix).exists():
                        os.replace(path.with_name(path.name + suffix), aside.with_name(aside.name + suffix))
                log.warning("the store %s is no backup-able zeroloop store (%s): moved aside to %s", path, exc, aside)
                return None, aside
        try:
            current = migrate.status(self.store).current
        except StoreError as exc:
            raise OperationsError(
                f"cannot read the store to keep a copy of it before the restore ({exc}); nothing changed"
            ) from None
        if current is None:
            return None, None  # an empty database: nothing to keep
        return self.backups.create(label=PRE_RESTORE).id, None

    def _replace(self, checked: Checked) -> str | None:
        """Put a checked snapshot in the store's place and upgrade it; the revision it was upgraded from, if any."""
        self.store.close()
        if checked.info.backend == "sqlite":
            self._sqlite_replace(checked.snapshot)
        else:
            self._pg_restore(checked.snapshot, self.store.url)
        before = migrate.status(self.store).current
        if before != migrate.head_revision():
            migrate.upgrade(self.store)
            return before
        return None

    def _roll_back(self, pre_restore: str | None, moved: Path | None) -> None:
        """Put the store back as it was before a restore that failed."""
        if pre_restore is not None:
            with tempfile.TemporaryDirectory(prefix="zeroloop-rollback-") as scratch:
                checked = self.check(pre_restore, Path(scratch))
                self.store.close()
                if checked.info.backend == "sqlite":
                    self._sqlite_replace(checked.snapshot)
                else:
                    self._pg_restore(checked.snapshot, self.store.url)
            log.warning("the failed restore was rolled back: the store is as backup %s holds it", pre_restore)
        elif moved is not None:
            self.store.close()
            target = sqlite_path(self.store.url)
            for suffix in ("", "-wal", "-shm"):
                source = moved.with_name(moved.name + suffix)
                if source.exists():
                    os.replace(source, target.with_name(target.name + suffix))
                else:
                    target.with_name(target.name + suffix).unlink(missing_ok=True)

    def _sqlite_replace(self, snapshot: Path) -> None:
        target = sqlite_path(self.store.url)
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.with_name(f".{target.name}.restore-{uuid.uuid4().hex[:8]}")
        shutil.copyfile(snapshot, staged)
        try:
            # A write-ahead log left beside the new file would be replayed into it: wipe it first.
            for suffix in ("-wal", "-shm", "-journal"):
                target.with_name(target.name + suffix).unlink(missing_ok=True)
            os.replace(staged, target)
        finally:
            staged.unlink(missing_ok=True)

    def _pg_restore(self, dump: Path, url: sa.engine.URL, *, clean: bool = True) -> None:
        args, env = pg_connection(url)
        tool = pg_tool("pg_restore", self.settings)
        wipe = ["--clean", "--if-exists"] if clean else []
        run_pg([tool, *wipe, "--no-owner", "--no-privileges", "--single-transaction", *args, str(dump)], env)

    # --- verify ----------------------------------------------------------------------------------

    def verify(self, backup_id: str) -> VerifyReport:
        """Prove backup `backup_id` restores: check it, restore it into a scratch store, upgrade and count it there.

        The live store is not touched. OperationsError names the first check that fails.
        """
        with tempfile.TemporaryDirectory(prefix="zeroloop-verify-") as scratch:
            checked = self.check(backup_id, Path(scratch))
            if checked.info.backend == "sqlite":
                copy = Path(scratch) / "verify.sqlite"
                shutil.copyfile(checked.snapshot, copy)
                report = self._verify_in(checked, f"sqlite:///{copy}")
            else:
                report = self._verify_in_scratch_database(checked)
        return report

    def _verify_in_scratch_database(self, checked: Checked) -> VerifyReport:
        name = f"{SCRATCH_PREFIX}{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(self.store.url.set(database="postgres"), isolation_level="AUTOCOMMIT")
        try:
            try:
                with admin.connect() as conn:
                    conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            except sa.exc.SQLAlchemyError as exc:
                raise OperationsError(
                    f"cannot create a scratch database on {self.store.display_url} to verify into "
                    f"({_first_line(exc)}): grant the store's user CREATEDB, or verify with a store.url on a "
                    "server where it may"
                ) from None
            try:
                scratch_url = self.store.url.set(database=name)
                self._pg_restore(checked.snapshot, scratch_url, clean=False)
                return self._verify_in(checked, scratch_url.render_as_string(hide_password=False))
            finally:
                with admin.connect() as conn:
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            admin.dispose()

    def _verify_in(self, checked: Checked, url: str) -> VerifyReport:
        """Open the restored scratch store, upgrade it, and compare what it holds with what the backup recorded."""
        info = checked.info
        with Store(url) as scratch:
            try:
                before = migrate.status(scratch).current
                upgraded_from = None
                if before != migrate.head_revision():
                    migrate.upgrade(scratch)
                    upgraded_from = before
                with scratch.read() as conn:
                    rows = {
                        table.name: int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
                        for table in metadata.sorted_tables
                    }
                    manifest = queries.manifest(conn)
            except StoreError as exc:
                raise OperationsError(f"backup {info.id} does not restore into a working store: {exc}") from None
        if len(manifest) != info.artifacts:
            raise OperationsError(
                f"backup {info.id}: the restored store holds {len(manifest)} artifacts, backup.json records "
                f"{info.artifacts}"
            )
        return VerifyReport(info, upgraded_from, rows, self.missing_artifacts(checked.entries))


def _shared_copy(entry: dict[str, Any]) -> str | None:
    """The location of a manifest entry's present shared copy (a relative key or a URL), or None."""
    shared = [c["location"] for c in entry["copies"] if c["node"] is None and c["status"] == "present"]
    return shared[0] if shared else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
