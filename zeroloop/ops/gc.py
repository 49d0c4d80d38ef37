"""Retention and garbage collection: what the loop no longer needs leaves the artifact location and the store.

What goes (ages from `retention.*`, in days):

- finished jobs (completed, dead, cancelled) older than `finished_jobs_days`, except
  those that made a kept model or its training window (the lineage needs them);
- rejected models older than `rejected_models_days`: the registry row and the model
  file, and the training window they were trained on when no kept model shares it;
- game batches older than `game_batches_days` that are in no config's newest training
  window (the next export reads those), named by no queued or running export, and in no
  kept model's lineage (the inputs of the export that made its window; a shard is in it
  when one of the batches merged into it is, see zeroloop.ops.consolidate); a config
  whose lineage cannot be traced keeps them all;
- training windows as old that no kept model names.

Nothing a queued or running job names (its inputs, window or models) is deleted.

A kept model is any model that is not rejected, and a rejected one younger than its
retention. An artifact's shared file goes first and its manifest row last, so a crash in
between leaves a row without a file, which the orphan check finds. The orphan check
compares one listing of the artifact location with the manifest, both ways: files no
row names (older than `ORPHAN_GRACE_S`, so an upload recording its row right now is
left alone), and present rows whose file is gone. `--repair` deletes the former and
drops the latter's rows. A dry run changes nothing and lists what would go.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from zeroloop.artifacts.repository import Artifacts
from zeroloop.artifacts.transfer import ArtifactKind
from zeroloop.config import Settings
from zeroloop.events.bus import EventBus
from zeroloop.events.wiring import declare
from zeroloop.store.database import Store
from zeroloop.store.queries import artifacts as artifact_queries
from zeroloop.store.queries import jobs as job_queries
from zeroloop.store.queries import maintenance as queries

log = logging.getLogger(__name__)

declare("zeroloop.ops.gc", emits=("GARBAGE_COLLECTED",))

DAY_S = 86400.0
ORPHAN_GRACE_S = 3600.0  # a file younger than this may be an upload whose manifest row is being written (seconds)
JOB_BATCH = 1000  # finished jobs deleted per transaction
_SHARED = re.compile(r"^(?P<kind>[a-z_]+)/(?P<prefix>[0-9a-f]{2})/(?P<sha>[0-9a-f]{64})$")

Fence = Callable[[Connection], None]


@dataclass
class GcReport:
    """What a collection deleted (or, in a dry run, would delete); sizes in bytes."""

    dry_run: bool
    jobs: int = 0
    rejected_models: list[str] = field(default_factory=list)
    artifacts: dict[str, list[str]] = field(default_factory=dict)  # kind -> sha256s
    orphan_files: list[str] = field(default_factory=list)  # keys under the location that no row names
    missing_files: list[str] = field(default_factory=list)  # sha256s whose present shared copy has no file
    repaired: bool = False
    bytes_freed: int = 0

    def counts(self) -> dict[str, int]:
        """How many of each: jobs, rejected models, artifacts per kind, orphans both ways."""
        found = {"jobs": self.jobs, "rejected_models": len(self.rejected_models)}
        found.update({kind: len(shas) for kind, shas in sorted(self.artifacts.items())})
        found.update(orphan_files=len(self.orphan_files), missing_files=len(self.missing_files))
        return found


class GarbageCollector:
    """Applies the retention settings to the store and the artifact location."""

    def __init__(
        self,
        store: Store,
        bus: EventBus,
        artifacts: Artifacts,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        fence: Fence | None = None,
    ) -> None:
        """`fence(conn)` guards every deleting transaction when a leader-only daemon runs this."""
        self.store = store
        self.bus = bus
        self.artifacts = artifacts
        self.settings = settings
        self.retention = settings.retention
        self.clock = clock
        self.fence = fence or (lambda conn: None)

    def collect(self, *, dry_run: bool = False, repair: bool = False) -> GcReport:
        """Delete what retention allows (nothing when `dry_run`), and find orphans (removed when `repair`)."""
        now = self.clock()
        report = GcReport(dry_run=dry_run)
        with self.store.read() as conn:
            doomed_models, doomed = self._doomed(conn, now)
        report.rejected_models = [row["id"] for row in doomed_models]
        for kind, rows in doomed.items():
            report.artifacts[kind] = [row["sha256"] for row in rows]
            report.bytes_freed += sum(int(row["size_bytes"]) for row in rows)
        report.jobs = self._finished_jobs(now, dry_run, gone={row["id"] for row in doomed_models})
        if not dry_run:
            with self.store.transaction() as conn:
                self.fence(conn)
                for row in doomed_models:
                    queries.delete_model(conn, row["id"])
            for rows in doomed.values():
                for row in rows:
                    self._delete_artifact(row)
        self._orphans(report, now, repair=repair and not dry_run)
        if not dry_run and any(report.counts().values()):
            with self.store.transaction() as conn:
                self.fence(conn)
                self.bus.publish(
                    "GARBAGE_COLLECTED",
                    {"counts": report.counts(), "bytes_freed": report.bytes_freed, "repaired": report.repaired},
                )
        log.info("garbage collection%s: %s", " (dry run)" if dry_run else "", report.counts())
        return report

    # --- what goes ---------------------------------------------------------------------------

    def _doomed(self, conn: Connection, now: float) -> tuple[list[Any], dict[str, list[Any]]]:
        """The rejected models past retention, and per kind the artifact rows that may go."""
        models = queries.all_models(conn)
        model_cutoff = now - self.retention.rejected_models_days * DAY_S
        old_rejected = [m for m in models if m["stage"] == "rejected" and m["created_at"] < model_cutoff]
        gone = {m["id"] for m in old_rejected}
        kept = [m for m in models if m["id"] not in gone]
        kept_artifacts = {m["artifact_sha256"] for m in kept} | {m["window_sha256"] for m in kept if m["window_sha256"]}
        kept_batches, untraced = self._lineage_batches(conn, kept)
        for key in queries.pipeline_keys(conn):
            kept_batches |= set(self._window_inputs(conn, key))
        awaited = queries.named_by_unfinished_jobs(conn)  # a job not run yet reads them
        kept_batches |= awaited
        kept_artifacts |= awaited
        cutoff = now - self.retention.game_batches_days * DAY_S
        doomed: dict[str, list[Any]] = {}
        doomed[ArtifactKind.MODEL.value] = [
            row
            for sha in sorted({m["artifact_sha256"] for m in old_rejected} - kept_artifacts)
            if (row := artifact_queries.get_artifact(conn, sha)) is not None
        ]
        windows = {m["window_sha256"] for m in old_rejected if m["window_sha256"]} - kept_artifacts
        old_windows = queries.artifacts_of_kind(conn, ArtifactKind.TRAINING_WINDOW.value, created_before=cutoff)
        windows |= {row["sha256"] for row in old_windows} - kept_artifacts
        doomed[ArtifactKind.TRAINING_WINDOW.value] = [
            row for sha in sorted(windows) if (row := artifact_queries.get_artifact(conn, sha)) is not None
        ]
        doomed[ArtifactKind.GAME_BATCH.value] = [
            row
            for row in queries.artifacts_of_kind(conn, ArtifactKind.GAME_BATCH.value, created_before=cutoff)
            if row["config_key"] not in untraced
            and row["sha256"] not in kept_batches
            and not kept_batches.intersection(row["meta"].get("consolidated_from", []))  # a shard of kept batches
        ]
        return old_rejected, {kind: rows for kind, rows in doomed.items() if rows}

    def _lineage_batches(self, conn: Connection, kept: list[Any]) -> tuple[set[str], set[str]]:
        """The game batches behind kept models' windows, and the config keys whose lineage is lost."""
        batches: set[str] = set()
        untraced: set[str] = set()
        for model in kept:
            window = model["window_sha256"]
            row = artifact_queries.get_artifact(conn, window) if window else None
            job = job_queries.get_job(conn, int(row["producer_job_id"])) if row and row["producer_job_id"] else None
            if job is None:
                if window:  # a window whose export is unknown: its batches cannot be told apart, keep them all
                    untraced.add(model["config_key"])
                continue
            batches.update(str(sha) for sha in (job["payload"] or {}).get("inputs", []))
        return batches, untraced

    def _window_inputs(self, conn: Connection, config_key: str) -> list[str]:
        """The newest game batches of a config that together fill a training window: the next export's inputs."""
        chosen, total = [], 0
        rows = artifact_queries.list_artifacts(conn, config_key=config_key, kind=ArtifactKind.GAME_BATCH.value)
        for row in rows:
            chosen.append(str(row["sha256"]))
            total += int(row["meta"].get("samples", 0))
            if total >= self.settings.pipeline.window_samples:
                break
        return chosen

    def _protected_jobs(self, conn: Connection, gone: set[str]) -> set[int]:
        """Jobs a kept model's lineage names: its own jobs, and the producers of its file and its window."""
        protected: set[int] = set()
        for model in queries.all_models(conn):
            if model["id"] in gone:
                continue
            protected.update(int(job_id) for job_id in model["job_ids"] or [])
            for sha in (model["artifact_sha256"], model["window_sha256"]):
                row = artifact_queries.get_artifact(conn, sha) if sha else None
                if row is not None and row["producer_job_id"] is not None:
                    protected.add(int(row["producer_job_id"]))
        return protected

    # --- deleting ----------------------------------------------------------------------------

    def _finished_jobs(self, now: float, dry_run: bool, *, gone: set[str]) -> int:
        """Delete finished jobs past retention that no kept model's lineage names (models in `gone` are not kept)."""
        cutoff = now - self.retention.finished_jobs_days * DAY_S
        with self.store.read() as conn:
            protected = self._protected_jobs(conn, gone)
        deleted = 0
        after = 0
        while True:  # ends: each pass moves `after` past at least one job id
            with self.store.read() if dry_run else self.store.transaction() as conn:
                if not dry_run:
                    self.fence(conn)
                ids = queries.finished_jobs_before(conn, cutoff, after=after, limit=JOB_BATCH)
                if not ids:
                    return deleted
                after = ids[-1]
                doomed = [job_id for job_id in ids if job_id not in protected]
                deleted += len(doomed) if dry_run else queries.delete_jobs(conn, doomed)

    def _delete_artifact(self, row: Any) -> None:
        """The shared file first, the manifest row last: a crash in between leaves a row the orphan check repairs."""
        sha = row["sha256"]
        with self.store.read() as conn:
            copies = artifact_queries.copies_of(conn, sha, status=None)
        for copy in copies:
            if copy["node"] is not None:
                continue  # a copy held on a node is that node's to upload or drop
            fs, path = self.artifacts.open_copy(copy["location"])
            with contextlib.suppress(FileNotFoundError):
                fs.rm_file(path)
        with self.store.transaction() as conn:
            self.fence(conn)
            queries.delete_artifact(conn, sha)
        self.artifacts.cache.remove(sha)

    # --- orphans -----------------------------------------------------------------------------

    def _orphans(self, report: GcReport, now: float, *, repair: bool) -> None:
        fs, root = self.artifacts.fs, self.artifacts.root
        # Rows first, then the listing: an upload writes its file before its row, so a row read
        # here has its file listed below unless the file is really gone, and a file uploaded
        # meanwhile is young (left alone) rather than a row taken for missing.
        with self.store.read() as conn:
            rows = queries.shared_copies(conn)
        named = {row["location"] for row in rows}
        listing = fs.find(root, detail=True) if fs.exists(root) else {}
        files: dict[str, Any] = {}
        for path, info in listing.items():
            key = str(path)[len(root) :].lstrip("/")
            files[key] = info
        for key, info in sorted(files.items()):
            match = _SHARED.match(key)
            stale_part = key.endswith(".part") and not key.startswith("quarantine/")
            if match is None and not stale_part:
                continue  # quarantined copies and foreign files are left for a person
            if key in named:
                continue
            modified = _modified(info)
            if modified is None or now - modified < ORPHAN_GRACE_S:
                continue
            report.orphan_files.append(key)
            if repair:
                fs.rm_file(f"{root}/{key}")
        for row in rows:
            if row["location"] not in files and not fs.exists(f"{root}/{row['location']}"):
                report.missing_files.append(row["sha256"])
                if repair:
                    with self.store.transaction() as conn:
                        self.fence(conn)
                        queries.delete_copy(conn, row["sha256"], row["location"])
                        queries.drop_if_unreferenced(conn, row["sha256"])
        report.repaired = repair and bool(report.orphan_files or report.missing_files)


def _modified(info: dict[str, Any]) -> float | None:
    """A listed file's modification time (epoch seconds), from whatever the filesystem reports."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, datetime.datetime):
            return value.timestamp()
        if isinstance(value, str):
            try:
                return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None
