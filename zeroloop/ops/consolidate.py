"""Consolidation: small game batches merged into larger shards, so a training window reads few files.

Per config key, accepted game batches (never a deposed lease holder's late output, see
zeroloop.store.queries.artifacts) older than `maintenance.consolidate_after_s` and smaller
than a quarter of `maintenance.shard_target_bytes` are grouped, oldest first, into
groups of at most that many bytes (two members at least). Each group is merged into one
shard in the game-batch format (positions in member order, game indices renumbered),
which is checked against its members' counts and uploaded (sha256-verified) before the
manifest changes. Then one transaction swaps the members' rows for the shard's row:
it locks the pipeline row first, as the coordinator does when it picks a window's
inputs, and gives up when a queued or running export still names a member, so no export
ever names a batch that is gone. The shard keeps the newest member's `created_at` (the
window order does not change), the sum of their samples and games, and the member
hashes in `meta.consolidated_from` (retention follows lineage through it). The members'
files are deleted after the swap; a crash in between leaves files the orphan check finds.
Only the built-in AlphaZero format is merged; another workload's batches are left alone.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.engine import Connection

from zeroloop.artifacts.repository import Artifacts, shared_key
from zeroloop.artifacts.transfer import ArtifactKind
from zeroloop.config import Settings
from zeroloop.errors import ArtifactError, WorkloadError
from zeroloop.store.database import Store
from zeroloop.store.queries import artifacts as artifact_queries
from zeroloop.store.queries import maintenance as queries
from zeroloop.store.queries import pipelines as pipeline_queries
from zeroloop.workload.datafiles import SAMPLE_KEYS, Arrays, load_game_batch, write_npz

log = logging.getLogger(__name__)

Fence = Callable[[Connection], None]
MIN_MEMBERS = 2


@dataclass
class ConsolidationReport:
    """What a consolidation pass did: shards written, batches merged into them, groups given up."""

    shards: list[str] = field(default_factory=list)
    merged: int = 0
    skipped: int = 0


def merge_batches(paths: list[Path], config_key: str) -> Arrays:
    """One game batch holding every position and game of `paths` (oldest first), indices renumbered."""
    parts = [load_game_batch(path, config_key) for path in paths]
    merged: Arrays = {key: np.concatenate([part[key] for part in parts]) for key in SAMPLE_KEYS}
    offsets = np.cumsum([0] + [int(part["num_games"]) for part in parts[:-1]])
    merged["game_index"] = np.concatenate(
        [part["game_index"].astype(np.int64) + int(offset) for part, offset in zip(parts, offsets, strict=True)]
    ).astype(np.int32)
    merged["game_lengths"] = np.concatenate([part["game_lengths"] for part in parts]).astype(np.int32)
    if all("game_moves" in part for part in parts):  # moves per game: kept when every member has them
        merged["game_moves"] = np.concatenate([part["game_moves"] for part in parts]).astype(np.int32)
    merged["num_games"] = np.asarray(sum(int(part["num_games"]) for part in parts), dtype=np.int64)
    merged["config_key"] = np.asarray(config_key)
    merged["model_sha256"] = np.asarray(str(parts[-1]["model_sha256"]))  # the newest member's model
    return merged


class Consolidator:
    """Merges small game batches into shards and swaps them into the manifest atomically."""

    def __init__(
        self,
        store: Store,
        artifacts: Artifacts,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        fence: Fence | None = None,
    ) -> None:
        self.store = store
        self.artifacts = artifacts
        self.settings = settings
        self.clock = clock
        self.fence = fence or (lambda conn: None)

    def run(self) -> ConsolidationReport:
        """One pass over every config key."""
        report = ConsolidationReport()
        if self.settings.workload.kind != "alphazero":
            return report
        with self.store.read() as conn:
            keys = queries.pipeline_keys(conn)
        for config_key in keys:
            for group in self.groups(config_key):
                shard = self._consolidate(config_key, group)
                if shard is None:
                    report.skipped += 1
                else:
                    report.shards.append(shard)
                    report.merged += len(group)
        if report.shards:
            log.info("consolidated %d game batches into %d shards", report.merged, len(report.shards))
        return report

    def groups(self, config_key: str) -> list[list[Any]]:
        """The batches of `config_key` to merge, in groups of at most `shard_target_bytes`, oldest first."""
        maintenance = self.settings.maintenance
        target, small = maintenance.shard_target_bytes, maintenance.shard_target_bytes // 4
        before = self.clock() - maintenance.consolidate_after_s
        with self.store.read() as conn:
            # Accepted outputs only: a deposed holder's late batch merged into a shard would pass for accepted.
            rows = queries.artifacts_of_kind(
                conn, ArtifactKind.GAME_BATCH.value, created_before=before, accepted_only=True
            )
        candidates = [row for row in rows if row["config_key"] == config_key and int(row["size_bytes"]) < small]
        groups: list[list[Any]] = []
        current: list[Any] = []
        for row in candidates:
            if current and sum(int(r["size_bytes"]) for r in current) + int(row["size_bytes"]) > target:
                groups.append(current)
                current = []
            current.append(row)
        groups.append(current)
        return [group for group in groups if len(group) >= MIN_MEMBERS]

    def _consolidate(self, config_key: str, group: list[Any]) -> str | None:
        members = [str(row["sha256"]) for row in group]
        with tempfile.TemporaryDirectory(prefix="zeroloop-shard-") as scratch:
            try:
                arrays = merge_batches([self.artifacts.fetch(sha) for sha in members], config_key)
            except (WorkloadError, ArtifactError) as exc:  # another format, or a member gone meanwhile
                log.warning("%s: batches not merged (%s)", config_key, exc)
                return None
            path = Path(scratch) / "shard.npz"
            write_npz(path, arrays)
            check = load_game_batch(path, config_key)  # what was written reads back, whole
            if check["obs"].shape[0] != arrays["obs"].shape[0]:
                raise WorkloadError(f"{config_key}: the shard of {members} does not read back whole")
            sha, size = self.artifacts.upload_shared(path, ArtifactKind.GAME_BATCH)
        samples = sum(int(row["meta"].get("samples", 0)) for row in group)
        # Lineage stays flat: a shard merged again names the original batches too.
        origins = sorted({*members, *(sha for row in group for sha in row["meta"].get("consolidated_from", []))})
        meta = {"samples": samples, "games": int(arrays["num_games"]), "consolidated_from": origins}
        if not self._swap(config_key, group, sha, size, meta):
            return None
        fs, root = self.artifacts.fs, self.artifacts.root
        for row in group:  # the rows are gone: their files follow (a crash here leaves orphans, found later)
            where = f"{root}/{shared_key(ArtifactKind.GAME_BATCH, row['sha256'])}"
            if fs.exists(where):
                fs.rm_file(where)
            self.artifacts.cache.remove(row["sha256"])
        return sha

    def _swap(self, config_key: str, group: list[Any], sha: str, size: int, meta: dict[str, Any]) -> bool:
        """Replace the members' rows by the shard's in one transaction; False when an export still needs one."""
        members = {str(row["sha256"]) for row in group}
        with self.store.transaction() as conn:
            self.fence(conn)
            pipeline_queries.get_pipeline(conn, config_key, for_update=True)  # as the coordinator picks inputs
            if members & queries.inputs_of_unfinished_exports(conn, config_key):
                log.info("%s: a running export reads batches of a shard; merged later", config_key)
                return False
            if queries.count_artifacts(conn, members) != len(members):
                return False  # a member went meanwhile (garbage collection): try again next pass
            now = self.clock()
            artifact_queries.record_artifact(
                conn,
                {
                    "sha256": sha,
                    "kind": ArtifactKind.GAME_BATCH.value,
                    "size_bytes": size,
                    "config_key": config_key,
                    "producer_job_id": None,
                    "meta": meta,
                    "created_at": max(float(row["created_at"]) for row in group),
                },
            )
            artifact_queries.record_copy(
                conn, sha256=sha, location=shared_key(ArtifactKind.GAME_BATCH, sha), node=None, now=now
            )
            for member in sorted(members):
                queries.delete_artifact(conn, member)
        return True
