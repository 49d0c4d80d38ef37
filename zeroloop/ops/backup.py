"""Backups: a consistent snapshot of the store plus the artifact manifest, at any fsspec URL.

A backup is a folder `<backup.url>/<id>/` (ids sort by time, e.g. `20261201T180000Z-1a2b3c`):

    store.sqlite | store.pgdump   the snapshot: SQLite's online backup API, or `pg_dump -Fc`
    manifest.jsonl                the artifact manifest, one artifact and its copies per line
    backup.json                   written last: id, time, backend, schema revision, sha256 of each file, label

A folder without `backup.json` is an unfinished backup: never listed, never restored,
removed by the next prune. The artifact files themselves stay where they are (the
artifact location is content-addressed and append-only); the manifest names them by
keys relative to that location, so a restore against the same or a copied location
finds them. A backup's label says why it was taken: none (the daily backup, or by hand),
`continuous` (the frequent snapshots that bound what a lost store costs, pruned to
`backup.continuous_keep`), `pre-restore` (the store as it was before a restore replaced
it: the way back). Restoring and verifying are in zeroloop.ops.restore.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL

from zeroloop.artifacts.transfer import hash_file, open_location, scheme_of
from zeroloop.config import Settings, redact
from zeroloop.errors import OperationsError
from zeroloop.store import migrate
from zeroloop.store.database import Store, sqlite_path
from zeroloop.store.queries import maintenance as queries

log = logging.getLogger(__name__)

INFO_FILE = "backup.json"
MANIFEST_FILE = "manifest.jsonl"
STORE_FILES = {"sqlite": "store.sqlite", "postgresql": "store.pgdump"}
PG_TOOL_TIMEOUT_S = 3600.0  # longest a pg_dump or pg_restore may run (seconds)
CONTINUOUS = "continuous"  # the label of the frequent snapshots
PRE_RESTORE = "pre-restore"  # the label of the copy a restore keeps of the store it replaces
DAILY_LABELS = ("", PRE_RESTORE)  # pruned together to backup.keep


@dataclass(frozen=True)
class BackupInfo:
    """One finished backup: what it holds and where (sizes in bytes, times in epoch seconds)."""

    id: str
    created_at: float
    backend: str
    schema_revision: str | None
    store_file: str
    store_sha256: str
    store_bytes: int
    artifacts: int
    manifest_sha256: str
    files: dict[str, int] = field(default_factory=dict)
    label: str = ""  # why it was taken: "" (daily, by hand), "continuous", "pre-restore"


class Backups:
    """Creates, lists, prunes and fetches backups of one deployment's store."""

    def __init__(self, settings: Settings, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.url = settings.backups_url.rstrip("/")
        try:
            same = scheme_of(self.url) == scheme_of(settings.artifacts_url)  # e.g. the same S3 endpoint and keys
            self.fs, self.root = open_location(self.url, settings.artifacts.storage_options if same else None)
        except Exception as exc:  # noqa: BLE001 - open_location raises ArtifactError naming the artifact location
            raise OperationsError(f"backup location {redact(self.url)!r} is unusable: {exc}") from None

    # --- create ---------------------------------------------------------------------------------

    def create(self, *, label: str = "") -> BackupInfo:
        """Snapshot the store and its manifest into a new backup folder; return what was written."""
        now = self.clock()
        backup_id = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))}-{uuid.uuid4().hex[:6]}"
        store_file = STORE_FILES[self.store.backend]
        with tempfile.TemporaryDirectory(prefix="zeroloop-backup-") as scratch:
            local = Path(scratch) / store_file
            if self.store.backend == "sqlite":
                self._sqlite_snapshot(local)
                revision, entries = _read_snapshot(local)
            else:
                self._pg_dump(local)
                with self.store.read() as conn:
                    entries = queries.manifest(conn)
                revision = migrate.status(self.store).current
            manifest = Path(scratch) / MANIFEST_FILE
            with manifest.open("w") as out:
                for entry in entries:
                    out.write(json.dumps(entry, sort_keys=True) + "\n")
            store_sha, store_bytes = hash_file(local)
            manifest_sha, manifest_bytes = hash_file(manifest)
            info = BackupInfo(
                id=backup_id,
                created_at=now,
                backend=self.store.backend,
                schema_revision=revision,
                store_file=store_file,
                store_sha256=store_sha,
                store_bytes=store_bytes,
                artifacts=len(entries),
                manifest_sha256=manifest_sha,
                files={store_file: store_bytes, MANIFEST_FILE: manifest_bytes},
                label=label,
            )
            folder = f"{self.root}/{backup_id}"
            try:
                self.fs.makedirs(folder, exist_ok=True)
                self.fs.put_file(str(local), f"{folder}/{store_file}")
                self.fs.put_file(str(manifest), f"{folder}/{MANIFEST_FILE}")
                # Written last: a folder without it is an unfinished backup.
                with self.fs.open(f"{folder}/{INFO_FILE}", "w") as out:
                    out.write(json.dumps(asdict(info), indent=1, sort_keys=True))
            except OSError as exc:
                raise OperationsError(
                    f"cannot write backup {backup_id} to {redact(self.url)}: {exc}; check backup.url and free space"
                ) from None
        log.info(
            "backup %s%s: %d bytes of store, %d artifacts in the manifest",
            backup_id, f" ({label})" if label else "", store_bytes, len(entries),
        )  # fmt: skip
        return info

    def _sqlite_snapshot(self, target: Path) -> None:
        # The online backup API copies a consistent state while writers go on (WAL readers never block them).
        source_path = sqlite_path(self.store.url)
        if not source_path.is_file():
            raise OperationsError(f"the store file {source_path} does not exist: nothing to back up")
        source = sqlite3.connect(source_path, timeout=self.settings.store.busy_timeout_s)
        try:
            copy = sqlite3.connect(target)
            try:
                source.backup(copy)
            finally:
                copy.close()
        except sqlite3.Error as exc:
            raise OperationsError(f"cannot snapshot the store {source_path}: {exc}") from None
        finally:
            source.close()

    def _pg_dump(self, target: Path) -> None:
        args, env = pg_connection(self.store.url)
        tool = pg_tool("pg_dump", self.settings)
        run_pg([tool, "--format=custom", "--no-owner", "--no-privileges", f"--file={target}", *args], env)

    # --- list and prune ------------------------------------------------------------------------

    def ls(self) -> list[BackupInfo]:
        """Every finished backup at the backup location, oldest first."""
        if not self.fs.exists(self.root):
            return []
        found = []
        for folder in sorted(self._folders()):
            info = self._info(folder.rsplit("/", 1)[-1])
            if info is not None:
                found.append(info)
        return sorted(found, key=lambda info: (info.created_at, info.id))

    def get(self, backup_id: str) -> BackupInfo:
        """One finished backup by id; OperationsError naming the ones there are when it is not found."""
        if "/" in backup_id or backup_id in ("", ".", ".."):
            raise OperationsError(f"{backup_id!r} is not a backup id: see `zeroloop backup ls`")
        info = self._info(backup_id)
        if info is None:
            known = ", ".join(b.id for b in self.ls()[-5:]) or "none"
            raise OperationsError(
                f"no finished backup {backup_id!r} at {redact(self.url)} (latest: {known}); see `zeroloop backup ls`"
            )
        return info

    def prune(self, keep: int, *, labels: tuple[str, ...] = DAILY_LABELS) -> list[str]:
        """Delete all but the newest `keep` backups with one of `labels`, and every unfinished folder but the
        newest; return what went."""
        finished = self.ls()
        mine = [info for info in finished if info.label in labels]
        doomed = [info.id for info in mine[: max(0, len(mine) - keep)]]
        known = {info.id for info in finished}
        unfinished = sorted(name for name in (f.rsplit("/", 1)[-1] for f in self._folders()) if name not in known)
        doomed += unfinished[:-1]  # the newest may be a backup being written right now
        for backup_id in doomed:
            self.fs.rm(f"{self.root}/{backup_id}", recursive=True)
            log.info("backup %s deleted (keeping %d)", backup_id, keep)
        return doomed

    def fetch(self, info: BackupInfo, scratch: Path) -> tuple[Path, Path]:
        """Download a backup's snapshot and manifest into `scratch`, each checked against its recorded sha256."""
        local, manifest = scratch / info.store_file, scratch / MANIFEST_FILE
        folder = f"{self.root}/{info.id}"
        try:
            self.fs.get_file(f"{folder}/{info.store_file}", str(local))
            self.fs.get_file(f"{folder}/{MANIFEST_FILE}", str(manifest))
        except OSError as exc:
            raise OperationsError(f"cannot read backup {info.id}: {exc}") from None
        for path, expected in ((local, info.store_sha256), (manifest, info.manifest_sha256)):
            if hash_file(path)[0] != expected:
                raise OperationsError(
                    f"backup {info.id}: {path.name} does not match its recorded sha256 (damaged): "
                    "restore another backup"
                )
        return local, manifest

    def _folders(self) -> list[str]:
        if not self.fs.exists(self.root):
            return []
        return [
            str(entry["name"]).rstrip("/")
            for entry in self.fs.ls(self.root, detail=True)
            if entry["type"] == "directory"
        ]

    def _info(self, backup_id: str) -> BackupInfo | None:
        path = f"{self.root}/{backup_id}/{INFO_FILE}"
        try:
            with self.fs.open(path, "r") as handle:
                data = json.load(handle)
            return BackupInfo(**data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            log.warning("backup %s is unreadable (%s); skipped", backup_id, exc)
            return None


def _read_snapshot(path: Path) -> tuple[str | None, list[dict[str, Any]]]:
    """The schema revision and the artifact manifest of a SQLite snapshot file."""
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            revision = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one_or_none()
            return revision, queries.manifest(conn)
    except sa.exc.SQLAlchemyError as exc:
        raise OperationsError(
            f"the store snapshot is not a zeroloop store ({exc.__class__.__name__}): run `zeroloop db upgrade` first"
        ) from None
    finally:
        engine.dispose()


def pg_tool(name: str, settings: Settings) -> str:
    """The path of a PostgreSQL client tool (pg_dump, pg_restore); OperationsError when it is not installed."""
    candidates: list[Path] = []
    if settings.backup.pg_bin_dir is not None:
        candidates.append(settings.backup.pg_bin_dir / name)
    on_path = shutil.which(name)
    if on_path:
        candidates.append(Path(on_path))
    candidates += [Path(found) for found in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise OperationsError(
        f"{name} is not installed, and a PostgreSQL store is backed up with it: install the PostgreSQL client "
        "tools of your server's version (e.g. apt-get install postgresql-client-15) or set backup.pg_bin_dir"
    )


def pg_connection(url: URL) -> tuple[list[str], dict[str, str]]:
    """Arguments and environment that connect a PostgreSQL tool; the password travels in the environment only."""
    args = [f"--dbname={url.database}"]
    if url.host:
        args.append(f"--host={url.host}")
    if url.port:
        args.append(f"--port={url.port}")
    if url.username:
        args.append(f"--username={url.username}")
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    return args, env


def run_pg(command: list[str], env: dict[str, str]) -> str:
    """Run a PostgreSQL client tool; its standard output, or OperationsError with its last line of error."""
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=PG_TOOL_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise OperationsError(f"{Path(command[0]).name} ran past {PG_TOOL_TIMEOUT_S:g} s") from None
    if done.returncode != 0:
        detail = redact(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
        raise OperationsError(f"{Path(command[0]).name} failed: {detail}")
    return done.stdout
