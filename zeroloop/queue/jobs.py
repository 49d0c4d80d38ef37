"""What a job is: its status machine, its requirements, and the lease a claimer holds on it.

A job's life is `queued -> running -> completed`, with detours: a failed or expired
attempt goes back to `queued` (after a backoff) until its attempts run out and it is
`dead`; any unfinished job can be `cancelled`; a queued job whose dependency is dead or
cancelled is `dead` too; a dead or cancelled job can be retried by hand. `transition()`
is the one place these moves are allowed or refused.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from zeroloop.errors import QueueError
from zeroloop.tracing import TRACE_KEY

# A job's own outcome event, published with its result: (type, payload, dedup key).
Outcome = tuple[str, Mapping[str, Any], str | None]

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,79}$")


class JobStatus(enum.StrEnum):
    """Where a job is in its life; stored as the lower-case value."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    DEAD = "dead"
    CANCELLED = "cancelled"


# Every legal move, with why it exists. Anything else is refused.
_EDGES: dict[tuple[JobStatus, JobStatus], str] = {
    (JobStatus.QUEUED, JobStatus.RUNNING): "a node claimed it and holds its lease",
    (JobStatus.RUNNING, JobStatus.COMPLETED): "the lease holder reported its result",
    (JobStatus.RUNNING, JobStatus.QUEUED): "an attempt failed retryably or its lease expired; attempts remain",
    (JobStatus.RUNNING, JobStatus.DEAD): "the last attempt failed or expired, or a failure was not retryable",
    (JobStatus.QUEUED, JobStatus.CANCELLED): "cancelled before any node took it",
    (JobStatus.QUEUED, JobStatus.DEAD): "a job it depends on is dead or cancelled, so it can never run",
    (JobStatus.RUNNING, JobStatus.CANCELLED): "cancelled while running; its holder's token stops being accepted",
    (JobStatus.DEAD, JobStatus.QUEUED): "retried by hand, with a fresh set of attempts",
    (JobStatus.CANCELLED, JobStatus.QUEUED): "retried by hand after a cancel",
}

FINISHED = frozenset({JobStatus.COMPLETED, JobStatus.DEAD, JobStatus.CANCELLED})


def transition(current: JobStatus, target: JobStatus, job_id: int | None = None) -> JobStatus:
    """Return `target` if a job may move there from `current`; raise QueueError naming the move otherwise."""
    if (current, target) not in _EDGES:
        what = f"job {job_id}" if job_id is not None else "a job"
        allowed = sorted(to.value for (frm, to) in _EDGES if frm is current)
        hint = f"from {current.value} it can become: {', '.join(allowed)}" if allowed else "it is final"
        raise QueueError(f"{what} cannot go from {current.value} to {target.value} ({hint})")
    return target


def sources(target: JobStatus) -> frozenset[JobStatus]:
    """The statuses from which a job may move to `target`."""
    return frozenset(frm for (frm, to) in _EDGES if to is target)


class Requirements(BaseModel):
    """What a node must offer to run a job: GPUs (count), memory (bytes) and every listed label."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gpus: int = Field(default=0, ge=0, le=64, description="GPUs the job needs (count)")
    memory_bytes: int = Field(default=0, ge=0, description="least node memory (bytes)")
    labels: frozenset[str] = Field(default_factory=frozenset, description="labels the node must all carry")

    def satisfied_by(self, capabilities: Capabilities) -> bool:
        """Whether a node with `capabilities` may run a job with these requirements."""
        return (
            self.gpus <= capabilities.gpus
            and self.memory_bytes <= capabilities.memory_bytes
            and self.labels <= capabilities.labels
        )

    def stored(self) -> dict[str, Any]:
        """The columns kept in the jobs table (labels sorted, None when there are none)."""
        return {
            "need_gpus": self.gpus,
            "need_memory_bytes": self.memory_bytes,
            "need_labels": sorted(self.labels) or None,
        }


class Capabilities(BaseModel):
    """What a claiming node offers: GPUs (count), memory (bytes) and labels."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gpus: int = Field(default=0, ge=0, description="GPUs on the node (count)")
    memory_bytes: int = Field(default=0, ge=0, description="node memory (bytes)")
    labels: frozenset[str] = Field(default_factory=frozenset, description="labels the node carries")


@dataclass(frozen=True)
class Job:
    """One job as stored (times: epoch seconds; timeout_s: seconds one attempt may run)."""

    id: int
    type: str
    config_key: str
    payload: dict[str, Any]
    priority: int
    requires: Requirements
    target_node: str | None
    idempotency_key: str | None
    status: JobStatus
    attempts: int
    max_attempts: int
    timeout_s: float
    run_after: float
    lease_node: str | None
    lease_token: int
    waiting_on: int
    has_dependents: bool
    lease_expires_at: float | None
    claimed_at: float | None
    result: Any
    error: str | None
    created_at: float
    updated_at: float
    finished_at: float | None
    traceparent: str | None = None  # the trace context of the span that enqueued it (kept in the payload)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Job:
        """Build a Job from a row of the jobs table (column name to value, JSON decoded), or of `job_to_wire`.

        The trace context stored in the payload under `tracing.TRACE_KEY` becomes `traceparent`,
        so `payload` is what the producer gave.
        """
        data = dict(row)
        payload = dict(data["payload"] or {})
        stored = payload.pop(TRACE_KEY, None)
        data["payload"] = payload
        data["traceparent"] = data.get("traceparent") or stored
        data["status"] = JobStatus(data["status"])
        # Stored values were validated on the way in: construct without validating again.
        data["requires"] = Requirements.model_construct(
            gpus=data.pop("need_gpus"),
            memory_bytes=data.pop("need_memory_bytes"),
            labels=frozenset(data.pop("need_labels") or ()),
        )
        data["has_dependents"] = bool(data["has_dependents"])
        for name in ("timeout_s", "run_after", "created_at", "updated_at"):
            data[name] = float(data[name])
        return cls(**data)


@dataclass(frozen=True)
class Lease:
    """A claim on a job: present `token` (the fencing token) to heartbeat, complete or fail it before `expires_at`."""

    job: Job
    token: int
    expires_at: float
