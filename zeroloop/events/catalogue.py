"""Every event type of zeroloop, declared once with the schema of its payload.

Names follow the seeds where they give one. A payload is a frozen pydantic model;
publishing validates against it, so an unknown type or a bad field is refused at the
producer with an error naming both, never discovered by a consumer later. Each payload
that concerns one config key carries it as `config_key`, which the bus also stores on
the envelope so consumers can filter by it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from zeroloop.errors import EventError


class Payload(BaseModel):
    """Base of every payload: immutable and strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ConfigPayload(Payload):
    """A payload about one config key such as `connect_four_2p`."""

    config_key: str = Field(min_length=1)


EVENT_TYPES: dict[str, type[Payload]] = {}

# Types that code outside zeroloop publishes (a user's commands, other systems) and
# zeroloop only consumes; the wiring check does not expect a zeroloop producer for them.
# Empty today: every type in this catalogue is published by zeroloop itself.
EXTERNAL_PRODUCERS: frozenset[str] = frozenset()


def _declare(name: str) -> Any:
    def register(cls: type[Payload]) -> type[Payload]:
        if name in EVENT_TYPES:
            raise AssertionError(f"event type {name} declared twice")
        EVENT_TYPES[name] = cls
        return cls

    return register


# --- pipeline -------------------------------------------------------------------------


@_declare("SELFPLAY_COMPLETE")
class SelfplayComplete(ConfigPayload):
    """A selfplay job finished; its game batch is stored as an artifact (games, samples: counts)."""

    job_id: int
    artifact_sha256: str
    games: int = Field(ge=0)
    samples: int = Field(ge=0)
    model_id: str | None = None


@_declare("GAME_BATCH_READY")
class GameBatchReady(ConfigPayload):
    """A game batch is in the artifact store and counted toward the next training."""

    artifact_sha256: str
    games: int = Field(ge=0)
    samples: int = Field(ge=0)


@_declare("NPZ_EXPORT_COMPLETE")
class NpzExportComplete(ConfigPayload):
    """A training window was built (samples: count after augmentation)."""

    job_id: int
    window_sha256: str
    samples: int = Field(ge=0)


@_declare("TRAINING_STARTED")
class TrainingStarted(ConfigPayload):
    """A training job began on a node."""

    job_id: int
    iteration: int = Field(ge=0)
    node: str


@_declare("TRAINING_PROGRESS")
class TrainingProgress(ConfigPayload):
    """Training reports its loss, the loss's policy and value parts when it knows them, and speed (samples/second)."""

    job_id: int
    step: int = Field(ge=0)
    loss: float
    samples_per_s: float = Field(ge=0)
    policy_loss: float | None = None
    value_loss: float | None = None


@_declare("TRAINING_COMPLETED")
class TrainingCompleted(ConfigPayload):
    """Training produced a candidate model."""

    job_id: int
    model_id: str
    artifact_sha256: str
    loss: float
    samples: int = Field(ge=0)


@_declare("EVALUATION_RESULT")
class EvaluationResult(ConfigPayload):
    """A match finished (elo_diff and elo_ci: Elo points, from model_id's side)."""

    job_id: int
    model_id: str
    opponent: str
    wins: int = Field(ge=0)
    draws: int = Field(ge=0)
    losses: int = Field(ge=0)
    elo_diff: float
    elo_ci: float = Field(ge=0)


@_declare("MODEL_PROMOTED")
class ModelPromoted(ConfigPayload):
    """A model became the production model of its config key."""

    model_id: str
    artifact_sha256: str
    previous_model_id: str | None = None
    reason: str


@_declare("MODEL_REJECTED")
class ModelRejected(ConfigPayload):
    """A candidate model failed the promotion policy."""

    model_id: str
    reason: str


@_declare("PIPELINE_PAUSED")
class PipelinePaused(ConfigPayload):
    """A config's pipeline stopped scheduling new work, and why."""

    reason: str


@_declare("PIPELINE_RESUMED")
class PipelineResumed(ConfigPayload):
    """A paused pipeline resumed."""

    reason: str


@_declare("ARTIFACT_CORRUPT")
class ArtifactCorrupt(Payload):
    """A stored copy did not match its sha256 and was quarantined."""

    artifact_sha256: str
    location: str
    actual_sha256: str | None = None


@_declare("GARBAGE_COLLECTED")
class GarbageCollected(Payload):
    """Retention deleted what the loop no longer needs (counts per kind; bytes_freed: bytes of artifacts)."""

    counts: dict[str, int]
    bytes_freed: int = Field(ge=0)
    repaired: bool = False


@_declare("DISK_SPACE_LOW")
class DiskSpaceLow(Payload):
    """A node's data disk passed its soft limit: cache evicted (bytes); past the hard one, selfplay refused."""

    node: str
    disk_pct: float = Field(ge=0, le=100)
    evicted_bytes: int = Field(ge=0)
    selfplay_refused: bool


@_declare("BACKUP_CREATED")
class BackupCreated(Payload):
    """The backup daemon took a backup (store_bytes: bytes) and deleted the ones past `backup.keep`."""

    backup_id: str
    store_bytes: int = Field(ge=0)
    artifacts: int = Field(ge=0)
    pruned: list[str] = Field(default_factory=list)


# --- work queue -----------------------------------------------------------------------


class JobPayload(ConfigPayload):
    """A payload about one job."""

    job_id: int
    job_type: str


@_declare("JOB_QUEUED")
class JobQueued(JobPayload):
    """A job entered the queue."""

    priority: int


@_declare("JOB_CLAIMED")
class JobClaimed(JobPayload):
    """A node leased a job (token: its fencing token; attempt counts from 1)."""

    node: str
    token: int
    attempt: int = Field(ge=1)


@_declare("JOB_COMPLETED")
class JobCompleted(JobPayload):
    """A job finished and its result was recorded."""

    node: str


@_declare("JOB_FAILED")
class JobFailed(JobPayload):
    """An attempt of a job failed; it is retried unless `retryable` is false or attempts ran out."""

    node: str
    error: str
    retryable: bool


@_declare("JOB_LEASE_EXPIRED")
class JobLeaseExpired(JobPayload):
    """A job's lease ran out without completion; the attempt counts."""

    node: str


@_declare("JOB_DEAD")
class JobDead(JobPayload):
    """A job used its last attempt and stays dead until retried by hand."""

    error: str


@_declare("JOB_CANCELLED")
class JobCancelled(JobPayload):
    """A job was cancelled."""


@_declare("BACKPRESSURE_CHANGED")
class BackpressureChanged(Payload):
    """A queue's backpressure level changed."""

    queue_type: str
    level: str
    previous: str
    depth: int = Field(ge=0)


# --- cluster, daemons, health ---------------------------------------------------------


@_declare("NODE_REGISTERED")
class NodeRegistered(Payload):
    """A node joined or rejoined the cluster."""

    node: str
    host: str
    provider: str


@_declare("NODE_LOST")
class NodeLost(Payload):
    """A node missed its heartbeats (silent_s: seconds since its last one)."""

    node: str
    silent_s: float = Field(ge=0)
    reason: str = ""


@_declare("NODE_IDLE_SHUTDOWN")
class NodeIdleShutdown(Payload):
    """A node was (or in a dry run would have been) terminated for being idle (idle_s: seconds)."""

    node: str
    provider: str
    idle_s: float = Field(ge=0)
    dry_run: bool
    cost_saved_per_hour: float | None = None


@_declare("LEADER_ELECTED")
class LeaderElected(Payload):
    """A node acquired a leader or role lease (token: fencing token)."""

    role: str
    node: str
    token: int


@_declare("LEADER_LOST")
class LeaderLost(Payload):
    """A node lost a leader or role lease, or gave it up on a clean stop (released: True)."""

    role: str
    node: str
    token: int
    released: bool = False


@_declare("CIRCUIT_OPENED")
class CircuitOpened(Payload):
    """A circuit breaker opened after repeated failures."""

    key: str
    failures: int = Field(ge=0)


@_declare("CIRCUIT_CLOSED")
class CircuitClosed(Payload):
    """A circuit breaker closed again after successful trials."""

    key: str


@_declare("DAEMON_CRASH_LOOP")
class DaemonCrashLoop(Payload):
    """A daemon restarted too often and was put in FAILED instead of restarted again."""

    node: str
    daemon: str
    restarts: int = Field(ge=0)
    last_error: str


# --- fleet ------------------------------------------------------------------------------


@_declare("NODE_LAUNCHED")
class NodeLaunched(Payload):
    """A provider accepted the launch of a node's machine; its worker registers next."""

    pool: str
    node: str
    provider_id: str


@_declare("NODE_LAUNCH_FAILED")
class NodeLaunchFailed(Payload):
    """A launch failed: the provider refused it, or the worker never registered in time."""

    pool: str
    node: str
    reason: str


@_declare("NODE_TERMINATED")
class NodeTerminated(Payload):
    """A fleet machine is gone; `cost` is what it cost in all (currency units)."""

    node: str
    pool: str
    cost: float = Field(ge=0)


@_declare("FLEET_ORPHAN_FOUND")
class FleetOrphanFound(Payload):
    """A provider lists a machine that zeroloop does not know: still billed, doing nothing for the loop."""

    pool: str
    provider_id: str
    node: str | None = None
    action: str


@_declare("FLEET_BUDGET_REACHED")
class FleetBudgetReached(Payload):
    """A launch was refused because the fleet would cost more than the budget (per hour)."""

    pool: str
    budget_per_hour: float
    cost_per_hour: float
    refused: int = Field(ge=0)


# --- alert checks ---------------------------------------------------------------------


@_declare("PROMOTION_STALLED")
class PromotionStalled(ConfigPayload):
    """A running pipeline has promoted no model for longer than alerts.no_promotion_hours (hours: how long)."""

    hours: float = Field(ge=0)
    last_promotion_at: float | None = None
    model_id: str | None = None


@_declare("DEAD_LETTERS_GROWING")
class DeadLettersGrowing(Payload):
    """More event dead letters are pending or parked than at the previous check (letters: counts)."""

    letters: int = Field(ge=0)
    previous: int = Field(ge=0)


def validate(event_type: str, payload: Payload | dict[str, Any]) -> Payload:
    """Return the payload as its declared model; raise EventError naming the type and the field."""
    model = EVENT_TYPES.get(event_type)
    if model is None:
        raise EventError(f"unknown event type {event_type!r}: declare it in zeroloop/events/catalogue.py")
    if isinstance(payload, model):
        return payload
    if isinstance(payload, Payload):
        raise EventError(f"event {event_type} takes a {model.__name__} payload, not {type(payload).__name__}")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"field {'.'.join(str(part) for part in error['loc']) or '<payload>'}: {error['msg']}"
            for error in exc.errors()
        )
        raise EventError(f"invalid payload for event {event_type}: {problems}") from None
