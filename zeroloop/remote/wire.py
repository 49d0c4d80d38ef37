"""What travels between a worker and `zeroloop serve`: request bodies, jobs as rows, and errors by name.

Server and client both import this module and nothing of each other. Every body, path
parameter, query string and header the server takes is read through one model here,
with ranges and lengths, so a client's mistake is a 400 naming the field before any
store work: no NUL character, integer beyond 64 bits, over-long string or document
nested past `MAX_DEPTH` reaches the store. An error crosses the wire as
`{"error": <class name>, "detail": <message>}` with the status `status_of` gives it; the
client raises the same class again, so the executor handles a refused lease over HTTP
exactly as it does over the store (StaleLeaseError in both cases).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from zeroloop import errors
from zeroloop.artifacts.transfer import ArtifactKind
from zeroloop.cluster.nodes import NodeError, NodeInfo, NodeRefused
from zeroloop.daemons.daemon import DaemonState
from zeroloop.queue.jobs import Capabilities, Job, Lease

API = "/api/v1/worker"
SHA256_HEADER = "X-Zeroloop-SHA256"
META_HEADER = "X-Zeroloop-Meta"
# A fresh node-bound credential rides in these headers of a node heartbeat's answer (docs/server.md).
CREDENTIAL_HEADER = "X-Zeroloop-Credential"
CREDENTIAL_EXPIRES_HEADER = "X-Zeroloop-Credential-Expires"

# A job completes with its type's outcome event, and only so (never through POST events).
COMPLETION_EVENTS = frozenset({"SELFPLAY_COMPLETE", "NPZ_EXPORT_COMPLETE", "TRAINING_COMPLETED", "EVALUATION_RESULT"})
# What a worker publishes itself: progress of a job it holds, its own daemons' crash loops,
# and its own disk (the node's disk_space daemon, on every worker).
WORKER_EVENTS = frozenset(
    {"TRAINING_STARTED", "TRAINING_PROGRESS", "DAEMON_CRASH_LOOP", "DISK_SPACE_LOW", "DISK_SPACE_RECOVERED"}
)

INT64_MAX = 2**63 - 1  # the store's BIGINT
MAX_DEPTH = 16  # nesting of any JSON document a worker sends (objects and arrays)
MAX_ITEMS = 10_000  # values in one JSON document


class NotFound(errors.ZeroloopError):
    """A worker named a job or an artifact that does not exist (HTTP 404)."""


class BadRequest(errors.ZeroloopError):
    """A request body is malformed, too large, or not what the endpoint takes (HTTP 400 or 413)."""


class TooLarge(BadRequest):
    """A request body is larger than the server accepts (HTTP 413)."""


class MethodNotAllowed(BadRequest):
    """A worker API path asked with a method it does not take (HTTP 405)."""


class RateLimited(errors.ZeroloopError):
    """Too many requests from one address or token: retry after the answer's Retry-After (HTTP 429)."""


class Busy(errors.ZeroloopError):
    """The server is at its cap of requests it has not authenticated yet: retry shortly (HTTP 503)."""


class ServerUnavailable(errors.ZeroloopError):
    """The server could not be reached, or kept failing, after every retry."""


# Most specific first: the first class an error is an instance of gives its status.
_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (errors.Forbidden, 403),
    (errors.TokenRevoked, 401),
    (errors.AuthError, 401),
    (NotFound, 404),
    (TooLarge, 413),
    (MethodNotAllowed, 405),
    (BadRequest, 400),
    (RateLimited, 429),
    (Busy, 503),
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
# What a store failure answers: its message may name the database's host, port, user and name, so it
# stays in the server's log; the worker only needs to know it is worth retrying.
STORE_UNAVAILABLE = "the server cannot reach its store right now; retry later (the server's log says why)"


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
    """The JSON body that carries an error: its class name and its one-line message (never a store's details)."""
    if isinstance(exc, errors.StoreError):
        return {"error": type(exc).__name__, "detail": STORE_UNAVAILABLE}
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


# --- the value types every model is built from -----------------------------------------------


def _text(value: str) -> str:
    """Refuse a NUL character or an unpaired surrogate, which the store cannot keep."""
    if "\x00" in value:
        raise ValueError("contains a NUL character (\\x00)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains an unpaired UTF-16 surrogate") from None
    return value


def _json_value(value: Any) -> Any:
    """Refuse what no store keeps the same on both backends: NUL in a string or key, an integer beyond
    64 bits, NaN or infinity, nesting deeper than MAX_DEPTH, more than MAX_ITEMS values (walked without recursion)."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    seen = 0
    while pending:
        item, depth = pending.pop()
        seen += 1
        if seen > MAX_ITEMS:
            raise ValueError(f"holds more than {MAX_ITEMS} values")
        if depth > MAX_DEPTH:
            raise ValueError(f"is nested deeper than {MAX_DEPTH} levels")
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, int):
            if not -INT64_MAX - 1 <= item <= INT64_MAX:
                raise ValueError("holds an integer beyond the 64-bit range")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError("holds NaN or an infinity, which JSON does not have")
        elif isinstance(item, str):
            _text(item)
        elif isinstance(item, dict):
            for key, inner in item.items():
                _text(str(key))
                pending.append((inner, depth + 1))
        elif isinstance(item, list):
            pending.extend((inner, depth + 1) for inner in item)
        else:
            raise ValueError(f"holds a {type(item).__name__}, which is no JSON value")
    return value


# Text without control characters: names, ids, keys, labels (1-200 characters).
_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=_PRINTABLE), AfterValidator(_text)]
ShortName = Annotated[str, StringConstraints(min_length=1, max_length=80, pattern=_PRINTABLE), AfterValidator(_text)]
Text = Annotated[str, StringConstraints(max_length=4000), AfterValidator(_text)]
JobTypeName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.\-]{0,79}$")]
EventType = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]{0,79}$")]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Id = Annotated[int, Field(ge=1, le=INT64_MAX)]
FencingToken = Annotated[int, Field(ge=0, le=INT64_MAX)]
Count = Annotated[int, Field(ge=0, le=2**31 - 1)]
Bytes = Annotated[int, Field(ge=0, le=INT64_MAX)]
Seconds = Annotated[float, Field(ge=0, le=1e11, allow_inf_nan=False)]  # epoch seconds up to the year 5138
Percent = Annotated[float, Field(ge=0, le=100_000, allow_inf_nan=False)]  # a process may use many cores
JsonValue = Annotated[Any, AfterValidator(_json_value)]
JsonObject = Annotated[dict[str, Any], AfterValidator(_json_value)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- bodies ------------------------------------------------------------------------------------


class WireCapabilities(_Body):
    """What a claiming node offers: GPUs (count), memory (bytes), labels."""

    gpus: Annotated[int, Field(ge=0, le=1024)] = 0
    memory_bytes: Bytes = 0
    labels: Annotated[list[Name], Field(max_length=64)] = Field(default_factory=list)

    def capabilities(self) -> Capabilities:
        """The queue's own Capabilities."""
        return Capabilities(gpus=self.gpus, memory_bytes=self.memory_bytes, labels=frozenset(self.labels))


class ClaimBody(_Body):
    """Lease up to `limit` jobs this node may run (of `types`, or any type)."""

    capabilities: WireCapabilities = Field(default_factory=WireCapabilities)
    types: Annotated[list[JobTypeName], Field(max_length=64)] | None = None
    limit: Annotated[int, Field(ge=1, le=100)] = 1


class EventBody(_Body):
    """One event a worker publishes (dedup_key makes a retry harmless)."""

    type: EventType
    payload: JsonObject
    dedup_key: Annotated[str, StringConstraints(min_length=1, max_length=300), AfterValidator(_text)] | None = None


class TokenBody(_Body):
    """A fencing token, for heartbeating a lease."""

    token: FencingToken


class CompleteBody(_Body):
    """Complete the attempt held under `token`, publish its event with it, and optionally lease more jobs."""

    token: FencingToken
    result: JsonValue = None
    event: EventBody | None = None
    claim: ClaimBody | None = None


class FailBody(_Body):
    """Record a failed attempt."""

    token: FencingToken
    error: Annotated[str, StringConstraints(max_length=4000)]  # NULs are made visible by the queue, not refused
    retryable: bool = True


class ReleaseBody(_Body):
    """Give back an unfinished attempt (a draining worker)."""

    token: FencingToken
    reason: Text


class GpuLoad(_Body):
    """One GPU's load now."""

    model_config = ConfigDict(extra="ignore")

    index: Annotated[int, Field(ge=0, le=1024)]
    utilisation_pct: Percent | None = None
    memory_used_bytes: Bytes | None = None


class Utilisation(_Body):
    """A node's load now (percentages; pid of its agent). Fields this server does not know are dropped."""

    model_config = ConfigDict(extra="ignore")

    pid: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    cpu_pct: Percent | None = None
    memory_pct: Percent | None = None
    disk_pct: Percent | None = None
    gpu_pct: Percent | None = None
    gpus: Annotated[list[GpuLoad], Field(max_length=64)] = Field(default_factory=list)

    def stored(self) -> dict[str, Any]:
        """The utilisation as the nodes table keeps it (absent fields left out)."""
        return self.model_dump(exclude_unset=True)


class NodeDescription(_Body):
    """What a node says about itself at registration: NodeInfo's fields with their ranges."""

    id: Name
    host: Name
    provider: ShortName
    cpu_count: Annotated[int, Field(ge=1, le=1_000_000)]
    memory_bytes: Bytes
    disk_bytes: Bytes
    labels: Annotated[list[Name], Field(max_length=64)] = Field(default_factory=list)
    gpus: Annotated[list[JsonObject], Field(max_length=64)] = Field(default_factory=list)
    cost_per_hour: Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)] | None = None
    slots: Annotated[int, Field(ge=1, le=1024)] = 1
    pool: ShortName | None = None

    def info(self) -> NodeInfo:
        """The cluster's NodeInfo."""
        return NodeInfo(**self.model_dump())


class RegisterBody(_Body):
    """A node's description and its load now."""

    info: NodeDescription
    utilisation: Utilisation = Field(default_factory=Utilisation)


class HeartbeatBody(_Body):
    """A node's load now."""

    utilisation: Utilisation = Field(default_factory=Utilisation)


class DaemonRow(_Body):
    """One row of the daemons table, as a worker's daemon manager writes it (times: epoch seconds)."""

    node: Name
    name: ShortName
    state: DaemonState
    restarts: Count
    last_error: Text | None = None
    health: JsonObject
    started_at: Seconds | None = None
    updated_at: Seconds


class CrashLoop(_Body):
    """A DAEMON_CRASH_LOOP a worker's daemon manager detected (its node must be the worker's own)."""

    node: Name
    daemon: ShortName
    restarts: Count
    last_error: Text


class DaemonsBody(_Body):
    """A worker's daemon records and the crash loops it detected."""

    rows: Annotated[list[DaemonRow], Field(max_length=500)]
    crash_loops: Annotated[list[CrashLoop], Field(max_length=500)] = Field(default_factory=list)


class UploadQuery(_Body):
    """The query string of an upload: what the artifact is, and the job (held by the node) that produced it."""

    kind: ArtifactKind
    config_key: Name | None = None
    producer_job_id: Id


class DownloadQuery(_Body):
    """The query string of a download: `stream=1` asks the server to carry the bytes itself."""

    stream: Literal["0", "1"] = "0"


class Empty(_Body):
    """A body that carries nothing (`{}` or none at all)."""


# --- path parameters and headers ------------------------------------------------------------

_NODE = TypeAdapter(Name)
_CONFIG_KEY = TypeAdapter(Name)
_SHA256 = TypeAdapter(Sha256)
_META = TypeAdapter(JsonObject)
_JOB_ID_TEXT = re.compile(r"^[0-9]{1,19}$")


def node_param(text: str) -> str:
    """The node named in a path; BadRequest naming it when it is no node id."""
    return str(_checked(_NODE, text, "node"))


def config_key_param(text: str) -> str:
    """A config key named in a path; BadRequest when it is none."""
    return str(_checked(_CONFIG_KEY, text, "config_key"))


def sha256_param(text: str) -> str:
    """An artifact's sha256 named in a path: 64 lower-case hex digits."""
    return str(_checked(_SHA256, text, "sha256"))


def job_id_param(text: str) -> int:
    """A job id named in a path: 1 to 2^63-1; BadRequest saying what is wrong with it."""
    if not _JOB_ID_TEXT.match(text):
        if text.lstrip("-").isdigit():
            raise BadRequest(f"invalid request: job id {text[:40]} is out of range")
        raise BadRequest(f"invalid request: job id {text[:40]!r} is not a number")
    number = int(text)
    if not 0 < number <= INT64_MAX:
        raise BadRequest(f"invalid request: job id {text[:40]} is out of range")
    return number


def meta_header(text: str | None) -> dict[str, Any]:
    """The artifact meta a worker sent in X-Zeroloop-Meta (a JSON object), checked as any body is."""
    if not text:
        return {}
    try:
        return dict(_META.validate_json(text))
    except ValidationError as exc:
        raise invalid(exc.errors(include_url=False), META_HEADER) from None


def _checked(adapter: TypeAdapter[Any], text: str, name: str) -> Any:
    try:
        return adapter.validate_python(text)
    except ValidationError as exc:
        problem = exc.errors(include_url=False)[0]["msg"]
        raise BadRequest(f"invalid request: path {name} {text[:60]!r}: {problem}") from None
