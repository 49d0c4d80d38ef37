"""What travels between a worker and `zeroloop serve`: request bodies, jobs as rows, and errors by name.

Server and client both import this module and nothing of each other. An error crosses
the wire as `{"error": <class name>, "detail": <message>}` with the status `status_of`
gives it; the client raises the same class again, so the executor handles a refused
lease over HTTP exactly as it does over the store (StaleLeaseError in both cases).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from zeroloop import errors
from zeroloop.cluster.nodes import NodeError, NodeRefused
from zeroloop.queue.jobs import Capabilities, Job, Lease

API = "/api/v1/worker"
SHA256_HEADER = "X-Zeroloop-SHA256"
META_HEADER = "X-Zeroloop-Meta"

# Events a worker may publish itself: its jobs' outcomes and progress, and its daemons' crash loops.
COMPLETION_EVENTS = frozenset({"SELFPLAY_COMPLETE", "NPZ_EXPORT_COMPLETE", "TRAINING_COMPLETED", "EVALUATION_RESULT"})
WORKER_EVENTS = COMPLETION_EVENTS | {
    "TRAINING_STARTED",
    "TRAINING_PROGRESS",
    "DAEMON_CRASH_LOOP",
    "DISK_SPACE_LOW",  # the node's disk_space daemon, on every worker
    "DISK_SPACE_RECOVERED",
}


class NotFound(errors.ZeroloopError):
    """A worker named a job or an artifact that does not exist (HTTP 404)."""


class BadRequest(errors.ZeroloopError):
    """A request body is malformed, too large, or not what the endpoint takes (HTTP 400 or 413)."""


class TooLarge(BadRequest):
    """A request body is larger than the server accepts (HTTP 413)."""


class MethodNotAllowed(BadRequest):
    """A worker API path asked with a method it does not take (HTTP 405)."""


class ServerUnavailable(errors.ZeroloopError):
    """The server could not be reached, or kept failing, after every retry."""


# Most specific first: the first class an error is an instance of gives its status.
_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (errors.Forbidden, 403),
    (errors.AuthError, 401),
    (NotFound, 404),
    (TooLarge, 413),
    (MethodNotAllowed, 405),
    (BadRequest, 400),
    (errors.StaleLeaseError, 409),
    (errors.BackpressureRefused, 429),
    (NodeRefused, 409),  # the fleet gave the node up: the worker exits (zeroloop.cluster.agent)
    (NodeError, 409),
    (errors.QueueError, 422),
    (errors.ArtifactError, 422),
    (errors.EventError, 422),
    (errors.ConfigError, 422),
    (errors.StoreError, 503),
    (errors.ZeroloopError, 400),
)
_BY_NAME: dict[str, type[errors.ZeroloopError]] = {
    cls.__name__: cls for cls, _status in _STATUS if issubclass(cls, errors.ZeroloopError)
}


# What a failure that is no zeroloop error answers: a bug, logged whole by the server, never detailed here.
INTERNAL_ERROR = {"error": "InternalError", "detail": "internal server error; see the server log"}


def invalid(problems: Sequence[Mapping[str, Any]], part: str | None = None) -> BadRequest:
    """The 400 that names a request's first five validation problems (pydantic's `errors()`); `part`
    ("body", "query") is put before each location when the locations do not name it themselves."""
    where = (part,) if part else ()
    said = "; ".join(
        f"{'.'.join(str(step) for step in (*where, *problem['loc']))}: {problem['msg']}" for problem in problems[:5]
    )
    return BadRequest(f"invalid request: {said}")


def status_of(exc: Exception) -> int:
    """The HTTP status of a zeroloop error; 500 for anything else."""
    return next((status for cls, status in _STATUS if isinstance(exc, cls)), 500)


def error_body(exc: Exception) -> dict[str, str]:
    """The JSON body that carries an error: its class name and its one-line message."""
    return {"error": type(exc).__name__, "detail": str(exc)}


def raise_error(status: int, body: Mapping[str, Any] | None, fallback: str) -> None:
    """Raise the zeroloop error a server answered with (by name; ZeroloopError when unknown)."""
    body = body or {}
    name, detail = str(body.get("error", "")), str(body.get("detail") or fallback)
    cls = _BY_NAME.get(name)
    if cls is None:
        cls = errors.AuthError if status == 401 else errors.Forbidden if status == 403 else errors.ZeroloopError
    raise cls(detail)


def job_to_wire(job: Job) -> dict[str, Any]:
    """A job as its stored row (JSON-safe), which `Job.from_row` reads back."""
    row = {name: getattr(job, name) for name in job.__dataclass_fields__ if name != "requires"}
    row["status"] = job.status.value
    row.update(job.requires.stored())
    return row


def lease_to_wire(lease: Lease | None) -> dict[str, Any] | None:
    """A lease as its job's row (the token and expiry are the row's)."""
    return None if lease is None else job_to_wire(lease.job)


def lease_from_wire(row: Mapping[str, Any] | None) -> Lease | None:
    """The lease a server answered with, or None."""
    if row is None:
        return None
    job = Job.from_row(row)
    assert job.lease_expires_at is not None
    return Lease(job=job, token=job.lease_token, expires_at=job.lease_expires_at)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClaimBody(_Body):
    """Lease the next job this node may run."""

    capabilities: Capabilities = Field(default_factory=Capabilities)
    types: list[str] | None = None


class EventBody(_Body):
    """One event a worker publishes (dedup_key makes a retry harmless)."""

    type: str
    payload: dict[str, Any]
    dedup_key: str | None = Field(default=None, max_length=300)


class TokenBody(_Body):
    """A fencing token, for heartbeating a lease."""

    token: int


class CompleteBody(_Body):
    """Complete the attempt held under `token`, publish its event with it, and optionally lease the next job."""

    token: int
    result: Any = None
    event: EventBody | None = None
    claim: ClaimBody | None = None


class FailBody(_Body):
    """Record a failed attempt."""

    token: int
    error: str = Field(max_length=4000)
    retryable: bool = True


class ReleaseBody(_Body):
    """Give back an unfinished attempt (a draining worker)."""

    token: int
    reason: str = Field(max_length=4000)


class RegisterBody(_Body):
    """A node's description (NodeInfo's fields) and its load now."""

    info: dict[str, Any]
    utilisation: dict[str, Any] = Field(default_factory=dict)


class HeartbeatBody(_Body):
    """A node's load now."""

    utilisation: dict[str, Any] = Field(default_factory=dict)


class DaemonRow(_Body):
    """One row of the daemons table, as a worker's daemon manager writes it (times: epoch seconds)."""

    node: str
    name: str = Field(max_length=80)
    state: str = Field(max_length=20)
    restarts: int
    last_error: str | None = None
    health: dict[str, Any]
    started_at: float | None = None
    updated_at: float


class DaemonsBody(_Body):
    """A worker's daemon records and the crash loops it detected (DAEMON_CRASH_LOOP payloads)."""

    rows: list[DaemonRow]
    crash_loops: list[dict[str, Any]] = Field(default_factory=list)
