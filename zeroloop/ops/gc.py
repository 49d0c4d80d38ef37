"""Garbage collection: carries out the retention plan (zeroloop.ops.retention) and finds orphans both ways.

The plan says what goes and why the rest stays (`--show`). An artifact's shared file goes
first and its manifest row last, so a crash in between leaves a row without a file, which
the orphan check finds. Jobs go after the artifacts, so a job whose late output is still
in the manifest is never deleted before that output. Matches of deleted models past
`retention.match_results_days` go with their rating history. On S3, multipart uploads
left incomplete for `retention.multipart_grace_s` are aborted (zeroloop.ops.multipart).

The orphan check compares one listing of the artifact location with the manifest, both
ways: files no row names (older than `ORPHAN_GRACE_S`, so an upload recording its row right
now is left alone), and present rows whose file is gone. `--repair` deletes the former and
drops the latter's rows; it refuses, unless forced, when the location looks wrong: absent,
holding none of the manifest's files, or missing more than `artifacts.missing_max_pct` of the
manifest's shared copies (a mistyped `artifacts.url` looks exactly like that, and a repair
then would drop the manifest). The refusal comes before anything is deleted, and a dry run
or a plain collection reports it. A dry run changes nothing and lists what would go.
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
from zeroloop.config import Settings, redact
from zeroloop.errors import OperationsError
from zeroloop.events.bus import EventBus
from zeroloop.events.wiring import declare
from zeroloop.ops import multipart
from zeroloop.ops.retention import DAY_S, Plan, RetentionPlanner, job_key
from zeroloop.store.database import Store
from zeroloop.store.queries import artifacts as artifact_queries
from zeroloop.store.queries import maintenance as queries

log = logging.getLogger(__name__)

declare("zeroloop.ops.gc", emits=("GARBAGE_COLLECTED",))

ORPHAN_GRACE_S = 3600.0  # a file younger than this may be an upload whose manifest row is being written (seconds)
JOB_BATCH = 1000  # finished jobs deleted per transaction
_SHARED = re.compile(r"^(?P<kind>[a-z_]+)/(?P<prefix>[0-9a-f]{2})/(?P<sha>[0-9a-f]{64})$")

Fence = Callable[[Connection], None]


@dataclass
class GcReport:
    """What a collection deleted (or, in a dry run, would delete), and why the rest stays; sizes in bytes."""

    dry_run: bool
    jobs: int = 0
    rejected_models: list[str] = field(default_factory=list)
    artifacts: dict[str, list[str]] = field(default_factory=dict)  # kind -> sha256s
    late_outputs: dict[str, str] = field(default_factory=dict)  # sha256 -> why it is a deposed holder's output
    matches: int = 0  # matches of deleted models (with their rating history)
    incomplete_uploads: list[str] = field(default_factory=list)  # S3 multipart uploads aborted: "key (upload id)"
    orphan_files: list[str] = field(default_factory=list)  # keys under the location that no row names
    missing_files: list[str] = field(default_factory=list)  # sha256s whose present shared copy has no file
    repaired: bool = False
    repair_refused: str | None = None  # why --repair refuses (or would refuse) on this location; None: it may
    kept: dict[str, list[str]] = field(default_factory=dict)  # "kind sha256" or "job N" -> why it stays
    bytes_freed: int = 0

    def counts(self) -> dict[str, int]:
        """How many of each: jobs, rejected models, artifacts per kind, late outputs, matches, uploads, orphans."""
        found = {"jobs": self.jobs, "rejected_models": len(self.rejected_models)}
        found.update({kind: len(shas) for kind, shas in sorted(self.artifacts.items())})
        found.update(late_outputs=len(self.late_outputs), matches=self.matches)
        found.update(incomplete_uploads=len(self.incomplete_uploads))
        found.update(orphan_files=len(self.orphan_files), missing_files=len(self.missing_files))
        return found


@dataclass(frozen=True)
class _Survey:
    """One look at the location against the manifest: shared copy rows, the files listed (key -> info)."""

    rows: list[Any]
    files: dict[str, Any]
    exists: bool


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
        self.planner = RetentionPlanner(settings)
        self.clock = clock
        self.fence = fence or (lambda conn: None)

    def collect(self, *, dry_run: bool = False, repair: bool = False, force: bool = False) -> GcReport:
        """Delete what retention allows (nothing when `dry_run`), and find orphans (removed when `repair`).

        OperationsError, before anything is deleted, when `repair` is asked on a location that
        looks wrong (see the module docstring), unless `force`.
        """
        now = self.clock()
        report = GcReport(dry_run=dry_run)
        if repair and not dry_run and not force:
            refusal = self._refusal(self._survey())
            if refusal is not None:
                raise OperationsError(
                    f"gc --repair refused, nothing changed: {refusal}; check artifacts.url, or pass --force to repair "
                    "anyway"
                )
        with self.store.read() as conn:
            plan = self.planner.plan(conn, now)
        report.rejected_models = [row["id"] for row in plan.rejected_models]
        for kind, rows in plan.doomed.items():
            report.artifacts[kind] = [row["sha256"] for row in rows]
            report.bytes_freed += sum(int(row["size_bytes"]) for row in rows)
        report.late_outputs = dict(plan.late)
        report.matches = len(plan.match_ids)
        if not dry_run:
            with self.store.transaction() as conn:
                self.fence(conn)
                for row in plan.rejected_models:
                    queries.delete_model(conn, row["id"])
                queries.delete_matches(conn, plan.match_ids)
                queries.delete_rating_history_of_gone_models(conn, now - self.retention.match_results_days * DAY_S)
            for rows in plan.doomed.values():
                for row in rows:
                    self._delete_artifact(row)
        report.jobs = self._finished_jobs(now, dry_run, plan)
        report.kept = {key: list(reasons) for key, reasons in sorted(plan.kept.items())}
        self._incomplete_uploads(report, now, abort=not dry_run)
        self._orphans(report, now, repair=repair and not dry_run, force=force)
        if not dry_run and any(report.counts().values()):
            with self.store.transaction() as conn:
                self.fence(conn)
                self.bus.publish(
                    "GARBAGE_COLLECTED",
                    {"counts": report.counts(), "bytes_freed": report.bytes_freed, "repaired": report.repaired},
                )
        log.info("garbage collection%s: %s", " (dry run)" if dry_run else "", report.counts())
        if report.repair_refused:
            log.warning("gc: the artifact location looks wrong, --repair would refuse: %s", report.repair_refused)
        return report

    # --- deleting ----------------------------------------------------------------------------

    def _finished_jobs(self, now: float, dry_run: bool, plan: Plan) -> int:
        """Delete finished jobs past retention that the plan does not keep (their reasons go into `plan.kept`)."""
        cutoff = now - self.retention.finished_jobs_days * DAY_S
        with self.store.read() as conn:
            waiting = queries.depended_on_by_unfinished(conn)
        protected = dict(plan.protected_jobs)
        for job_id, dependents in waiting.items():
            protected.setdefault(job_id, []).append(
                "queued or running job(s) " + ", ".join(str(d) for d in dependents) + " depend on it"
            )
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
                for job_id in ids:
                    if job_id in protected:
                        plan.kept[job_key(job_id)] = protected[job_id]
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

    # --- S3 uploads left incomplete ---------------------------------------------------------

    def _incomplete_uploads(self, report: GcReport, now: float, *, abort: bool) -> None:
        fs, root = self.artifacts.fs, self.artifacts.root
        found = multipart.incomplete_uploads(fs, root, started_before=now - self.retention.multipart_grace_s)
        report.incomplete_uploads = [f"{upload.key} ({upload.upload_id})" for upload in found]
        if abort and found:
            multipart.abort(fs, root, found)
            log.info("aborted %d incomplete multipart upload(s) under %s", len(found), redact(self.artifacts.url))

    # --- orphans -----------------------------------------------------------------------------

    def _survey(self) -> _Survey:
        fs, root = self.artifacts.fs, self.artifacts.root
        # Rows first, then the listing: an upload writes its file before its row, so a row read
        # here has its file listed below unless the file is really gone, and a file uploaded
        # meanwhile is young (left alone) rather than a row taken for missing.
        with self.store.read() as conn:
            rows = queries.shared_copies(conn)
        exists = bool(fs.exists(root))
        listing = fs.find(root, detail=True) if exists else {}
        files = {str(path)[len(root) :].lstrip("/"): info for path, info in listing.items()}
        return _Survey(rows, files, exists)

    def _missing(self, survey: _Survey) -> list[Any]:
        fs, root = self.artifacts.fs, self.artifacts.root
        return [
            row
            for row in survey.rows
            if row["location"] not in survey.files and not fs.exists(f"{root}/{row['location']}")
        ]

    def _refusal(self, survey: _Survey, missing: list[Any] | None = None) -> str | None:
        """Why the location looks wrong for a repair (see `location_refusal`); None if it does not."""
        gone = len(self._missing(survey) if missing is None else missing)
        return location_refusal(
            self.artifacts.url, survey.exists, len(survey.rows), gone, self.settings.artifacts.missing_max_pct
        )

    def _orphans(self, report: GcReport, now: float, *, repair: bool, force: bool) -> None:
        fs, root = self.artifacts.fs, self.artifacts.root
        survey = self._survey()
        missing = self._missing(survey)
        report.repair_refused = self._refusal(survey, missing)
        repair = repair and (force or report.repair_refused is None)  # the location changed since the first look
        named = {row["location"] for row in survey.rows}
        for key, info in sorted(survey.files.items()):
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
        for row in missing:
            report.missing_files.append(row["sha256"])
            if repair:
                with self.store.transaction() as conn:
                    self.fence(conn)
                    queries.delete_copy(conn, row["sha256"], row["location"])
                    queries.drop_if_unreferenced(conn, row["sha256"])
        report.repaired = repair and bool(report.orphan_files or report.missing_files)


def location_refusal(url: str, exists: bool, named: int, missing: int, limit_pct: float) -> str | None:
    """Why an artifact location looks wrong against a manifest naming `named` files there, `missing` of them absent.

    Absent, holding none of them, or missing more than `limit_pct` percent of them: a
    mistyped or unmounted location looks exactly like that. None when it looks right (or the
    manifest names nothing there).
    """
    if not named:
        return None
    where = redact(url)
    if not exists:
        return f"the artifact location {where} does not exist, and the manifest names {named} files in it"
    if missing >= named:
        return f"the artifact location {where} holds none of the {named} files the manifest names"
    share = 100.0 * missing / named
    if share > limit_pct:
        return (
            f"{missing} of the manifest's {named} files ({share:.0f}%) are missing at {where}, more than "
            f"artifacts.missing_max_pct ({limit_pct:g}%)"
        )
    return None


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
