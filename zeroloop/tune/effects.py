"""What a tune's steps do to the rest of the loop, each once: decisions, holding and releasing a variant's
pipeline, cancelling its queued jobs, and writing a variant's model file (zeroloop.workload.members)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection, RowMapping

from zeroloop.pipeline import jobs
from zeroloop.ports import AppParts
from zeroloop.queue.jobs import JobStatus
from zeroloop.store.queries import pipelines as pipeline_queries
from zeroloop.store.queries import tunes as queries
from zeroloop.tune.space import Tuned

Fence = Callable[[Connection], None]
Writer = Callable[..., dict[str, int]]


def _no_fence(_conn: Connection) -> None:
    """No lease to check (a single process, or a test)."""


def _member_writer() -> Writer:
    from zeroloop.workload.members import write_member  # torch and OpenSpiel: only where a tune runs

    return write_member


class Effects:
    """The parts a tune's steps act through, with the leader's fence and the clock."""

    def __init__(self, parts: AppParts, fence: Fence | None, clock: Callable[[], float] | None) -> None:
        self.parts = parts
        self.fence = fence or _no_fence
        self.clock = clock or parts.clock
        self.workdir = parts.settings.data_dir / "work" / "tune"

    def tune(self, conn: Connection, tune_id: int) -> RowMapping:
        row = queries.get_tune(conn, tune_id, for_update=True)
        assert row is not None
        return row

    def decide(self, conn: Connection, tune: RowMapping, outcome: str, evidence: dict[str, Any]) -> None:
        pipeline_queries.insert_decision(
            conn,
            config_key=tune["config_key"],
            kind="tune",
            outcome=outcome,
            evidence={"tune": int(tune["id"]), **evidence},
            now=self.clock(),
        )

    def hold(self, conn: Connection, variant: str, reason: str) -> None:
        """Pause a variant's pipeline (no new rounds, no new selfplay) and say why."""
        state = pipeline_queries.get_pipeline(conn, variant, for_update=True)
        if state is None or state["paused"]:
            return
        pipeline_queries.update_pipeline(conn, variant, self.clock(), paused=True, pause_reason=reason)
        self.parts.bus.publish("PIPELINE_PAUSED", {"config_key": variant, "reason": reason})

    def release(self, conn: Connection, variant: str, reason: str) -> None:
        """Resume a variant's pipeline held by the tune."""
        state = pipeline_queries.get_pipeline(conn, variant, for_update=True)
        if state is None or not state["paused"]:
            return
        pipeline_queries.update_pipeline(conn, variant, self.clock(), paused=False, pause_reason=None)
        self.parts.bus.publish("PIPELINE_RESUMED", {"config_key": variant, "reason": reason})

    def cancel_queued(self, config_key: str, types: tuple[str, ...] | None = None) -> int:
        """Cancel the queued jobs of a key (of `types`, else its selfplay): a round in flight finishes."""
        cancelled = 0
        for job_type in types or (jobs.SELFPLAY,):
            for job in self.parts.queue.list(
                statuses=[JobStatus.QUEUED], job_type=job_type, config_key=config_key, limit=10_000
            ):
                self.parts.queue.cancel(job.id)
                cancelled += 1
        return cancelled

    def write(self, variant: str, settings: Tuned, *, source: Path | None, seed: int) -> tuple[str, dict[str, int]]:
        """Write a member model file (weights and settings), store it; its sha256 and network shape."""
        from zeroloop.artifacts.transfer import ArtifactKind

        workdir = self.workdir / f"{variant}-{seed}"
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            output = workdir / "model.pt"
            shape = _member_writer()(self.parts.settings.workload, variant, output, settings, source=source, seed=seed)
            artifact = self.parts.artifacts.put(
                output, ArtifactKind.MODEL, config_key=variant, meta={"tuned": settings}
            )
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return artifact.sha256, shape
