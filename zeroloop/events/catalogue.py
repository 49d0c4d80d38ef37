"""Every event type of zeroloop, declared once with the schema of its payload.

Names follow the seeds where they give one. A payload is a frozen pydantic model;
publishing validates against it, so an unknown type or a bad field is refused at the
producer with an error naming both, never discovered by a consumer later. Each payload
that concerns one config key carries it as `config_key`, which the bus also stores on
the envelope so consumers can filter by it.

Each type also declares, beside its payload, whether and how it alerts: an `Alerting`
(its one-line summary, severity, alert rule and deduplication key) or `Quiet` with the
reason it is routine. `zeroloop.alerts.rules` derives from these alone, so no fault can
be left off the alert channel by forgetting a table elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from zeroloop.config import ALERT_RULES
from zeroloop.errors import EventError


class Payload(BaseModel):
    """Base of every payload: immutable and strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ConfigPayload(Payload):
    """A payload about one config key such as `connect_four_2p`."""

    config_key: str = Field(min_length=1)


class Severity(StrEnum):
    """How loud an alert is: info (good news, logged at INFO), warning, critical (data or money at stake)."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


Fields = dict[str, Any]


@dataclass(frozen=True)
class Alerting:
    """How an event type reaches the person on call: its one-line summary, its severity, and its alert rule.

    `rule` (one of `config.ALERT_RULES`, which `alerts.rules` enables) sends the alert to the
    webhooks, deduplicated by `key(payload)`; without a rule it is only logged and shown.
    `when(payload)` narrows which events alert at all (a rollback among promotions, a lease
    lost rather than released); the others are logged at INFO.
    """

    summary: Callable[[Fields], str]
    severity: Severity = Severity.WARNING
    rule: str | None = None
    key: Callable[[Fields], str] | None = None
    when: Callable[[Fields], bool] | None = None

    def alerts(self, payload: Fields) -> bool:
        """Whether this payload is an alert (else it is only logged at INFO)."""
        return self.when is None or self.when(payload)


@dataclass(frozen=True)
class Quiet:
    """An event type that is routine, not an alert; `why` says so where it is declared."""

    why: str


EVENT_TYPES: dict[str, type[Payload]] = {}
ALERTING: dict[str, Alerting | Quiet] = {}
"""Every event type's alerting choice, declared with its payload (`_declare`): none can be forgotten."""

# Types that code outside zeroloop publishes (a user's commands, other systems) and
# zeroloop only consumes; the wiring check does not expect a zeroloop producer for them.
# Empty today: every type in this catalogue is published by zeroloop itself.
EXTERNAL_PRODUCERS: frozenset[str] = frozenset()


def _declare(name: str, alerting: Alerting | Quiet) -> Any:
    """Declare event type `name` with its payload class and whether and how it alerts."""
    if isinstance(alerting, Alerting):
        if alerting.rule is not None and alerting.rule not in ALERT_RULES:
            raise AssertionError(f"event type {name}: unknown alert rule {alerting.rule} (config.ALERT_RULES)")
        if alerting.rule is not None and alerting.key is None:
            raise AssertionError(f"event type {name}: an alert rule needs the key its alerts are deduplicated by")

    def register(cls: type[Payload]) -> type[Payload]:
        if name in EVENT_TYPES:
            raise AssertionError(f"event type {name} declared twice")
        EVENT_TYPES[name] = cls
        ALERTING[name] = alerting
        return cls

    return register


def _good_news(summary: Callable[[Fields], str]) -> Alerting:
    return Alerting(summary, Severity.INFO)


# --- pipeline -------------------------------------------------------------------------


@_declare(
    "SELFPLAY_COMPLETE",
    Quiet("routine: one per selfplay job"),
)
class SelfplayComplete(ConfigPayload):
    """A selfplay job finished; its game batch is stored as an artifact (games, samples: counts)."""

    job_id: int
    artifact_sha256: str
    games: int = Field(ge=0)
    samples: int = Field(ge=0)
    model_id: str | None = None


@_declare(
    "GAME_BATCH_READY",
    Quiet("routine: one per game batch"),
)
class GameBatchReady(ConfigPayload):
    """A game batch is in the artifact store and counted toward the next training."""

    artifact_sha256: str
    games: int = Field(ge=0)
    samples: int = Field(ge=0)


@_declare(
    "NPZ_EXPORT_COMPLETE",
    Quiet("routine: one per training window"),
)
class NpzExportComplete(ConfigPayload):
    """A training window was built (samples: count after augmentation)."""

    job_id: int
    window_sha256: str
    samples: int = Field(ge=0)


@_declare(
    "TRAINING_STARTED",
    Quiet("routine: one per training job"),
)
class TrainingStarted(ConfigPayload):
    """A training job began on a node."""

    job_id: int
    iteration: int = Field(ge=0)
    node: str


@_declare(
    "TRAINING_PROGRESS",
    Quiet("routine: progress of a running job"),
)
class TrainingProgress(ConfigPayload):
    """Training reports its loss and speed (samples_per_s: samples/second)."""

    job_id: int
    step: int = Field(ge=0)
    loss: float
    samples_per_s: float = Field(ge=0)


@_declare(
    "TRAINING_COMPLETED",
    Quiet("routine: one per trained candidate"),
)
class TrainingCompleted(ConfigPayload):
    """Training produced a candidate model."""

    job_id: int
    model_id: str
    artifact_sha256: str
    loss: float
    samples: int = Field(ge=0)


@_declare(
    "DISTILLATION_COMPLETED",
    Quiet("routine: one per distillation, rated like any model"),
)
class DistillationCompleted(ConfigPayload):
    """A distillation trained a smaller network from a teacher (parameters: the networks' sizes, in weights)."""

    job_id: int
    model_id: str
    artifact_sha256: str
    teacher_id: str
    loss: float
    samples: int = Field(ge=0)
    parameters: int = Field(ge=0)
    teacher_parameters: int = Field(ge=0)


@_declare(
    "EVALUATION_RESULT",
    Quiet("routine: one per match"),
)
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


@_declare(
    "MODEL_PROMOTED",
    Alerting(
        lambda p: (
            f"{p['config_key']}: production rolled back to {p['model_id']} from {p.get('previous_model_id') or 'none'}"
            if p["reason"] == "rollback"
            else f"{p['config_key']}: {p['model_id']} promoted to production ({p['reason']})"
        ),
        Severity.CRITICAL,
        rule="production_regression",
        key=lambda p: str(p["config_key"]),
        when=lambda p: p["reason"] == "rollback",  # a promotion that went well is good news, only logged
    ),
)
class ModelPromoted(ConfigPayload):
    """A model became the production model of its config key."""

    model_id: str
    artifact_sha256: str
    previous_model_id: str | None = None
    reason: str


@_declare(
    "MODEL_REJECTED",
    Quiet("routine: most candidates are rejected; PROMOTION_STALLED says when none passes for long"),
)
class ModelRejected(ConfigPayload):
    """A candidate model failed the promotion policy."""

    model_id: str
    reason: str


@_declare(
    "PIPELINE_PAUSED",
    Alerting(
        lambda p: f"pipeline {p['config_key']} paused: {p['reason']}",
        rule="pipeline_paused",
        key=lambda p: str(p["config_key"]),
    ),
)
class PipelinePaused(ConfigPayload):
    """A config's pipeline stopped scheduling new work, and why."""

    reason: str


@_declare(
    "PIPELINE_RESUMED",
    _good_news(lambda p: f"pipeline {p['config_key']} resumed: {p['reason']}"),
)
class PipelineResumed(ConfigPayload):
    """A paused pipeline resumed."""

    reason: str


@_declare(
    "PLATEAU_CHANGED",
    Alerting(
        lambda p: (
            f"{p['config_key']}: "
            + (f"on a plateau ({p['reason']})" if p["plateau"] else f"off its plateau, gaining again ({p['reason']})")
        ),
        rule="plateau",
        key=lambda p: str(p["config_key"]),
        when=lambda p: bool(p["plateau"]),  # leaving a plateau is good news, only logged
    ),
)
class PlateauChanged(ConfigPayload):
    """A config's production rating stopped (or resumed) rising over the plateau window (gain_elo: Elo points)."""

    plateau: bool
    gain_elo: float | None = None
    rounds: int = Field(ge=0)
    reason: str


@_declare(
    "QUALITY_WARNING",
    Alerting(
        lambda p: f"{p['config_key']}: selfplay quality: {'; '.join(p['warnings'])}",
        rule="quality_warning",
        key=lambda p: str(p["config_key"]),
    ),
)
class QualityWarning(ConfigPayload):
    """The selfplay quality monitor flagged a config's recent game batches (draw rate, entropy, game length)."""

    warnings: list[str] = Field(min_length=1)
    figures: dict[str, Any] = Field(default_factory=dict)


@_declare(
    "ARTIFACT_CORRUPT",
    Alerting(
        lambda p: f"artifact {p['artifact_sha256'][:12]} corrupt at {p['location']}; quarantined",
        Severity.CRITICAL,
        rule="artifact_corrupt",
        key=lambda p: str(p["artifact_sha256"]),
    ),
)
class ArtifactCorrupt(Payload):
    """A stored copy did not match its sha256 and was quarantined."""

    artifact_sha256: str
    location: str
    actual_sha256: str | None = None


@_declare(
    "GARBAGE_COLLECTED",
    _good_news(
        lambda p: (
            "garbage collected: "
            + ", ".join(f"{count} {what}" for what, count in sorted(p["counts"].items()) if count)
            + f" ({p['bytes_freed']} bytes freed)"
        )
    ),
)
class GarbageCollected(Payload):
    """Retention deleted what the loop no longer needs (counts per kind; bytes_freed: bytes of artifacts)."""

    counts: dict[str, int]
    bytes_freed: int = Field(ge=0)
    repaired: bool = False


@_declare(
    "DISK_SPACE_LOW",
    Alerting(
        lambda p: (
            f"node {p['node']} disk {p['disk_pct']:.0f}% full: {p['evicted_bytes']} bytes of cache evicted"
            + ("; it claims no new selfplay until space is freed" if p["selfplay_refused"] else "")
        ),
        rule="disk_space_low",
        key=lambda p: str(p["node"]),
    ),
)
class DiskSpaceLow(Payload):
    """A node's data disk passed its soft limit: cache evicted (bytes); past the hard one, selfplay refused."""

    node: str
    disk_pct: float = Field(ge=0, le=100)
    evicted_bytes: int = Field(ge=0)
    selfplay_refused: bool


@_declare(
    "DISK_SPACE_RECOVERED",
    _good_news(lambda p: f"node {p['node']} disk back to {p['disk_pct']:.0f}%: it claims selfplay again"),
)
class DiskSpaceRecovered(Payload):
    """A node's data disk is back below its soft limit after DISK_SPACE_LOW; its circuit breaker starts afresh."""

    node: str
    disk_pct: float = Field(ge=0, le=100)


@_declare(
    "BACKUP_CREATED",
    _good_news(
        lambda p: (
            f"backup {p['backup_id']} taken ({p['store_bytes']} bytes, {p['artifacts']} artifacts)"
            + (f"; deleted {len(p['pruned'])} older" if p["pruned"] else "")
        )
    ),
)
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


@_declare(
    "JOB_QUEUED",
    Quiet("routine: one per job"),
)
class JobQueued(JobPayload):
    """A job entered the queue."""

    priority: int


@_declare(
    "JOB_CLAIMED",
    Quiet("routine: one per attempt"),
)
class JobClaimed(JobPayload):
    """A node leased a job (token: its fencing token; attempt counts from 1)."""

    node: str
    token: int
    attempt: int = Field(ge=1)


@_declare(
    "JOB_COMPLETED",
    Quiet("routine: one per job"),
)
class JobCompleted(JobPayload):
    """A job finished and its result was recorded."""

    node: str


@_declare(
    "JOB_FAILED",
    Quiet("retried with backoff; JOB_DEAD alerts when the attempts run out"),
)
class JobFailed(JobPayload):
    """An attempt of a job failed; it is retried unless `retryable` is false or attempts ran out."""

    node: str
    error: str
    retryable: bool


@_declare(
    "JOB_LEASE_EXPIRED",
    Quiet("re-queued by the reaper; NODE_LOST alerts for a node that went silent"),
)
class JobLeaseExpired(JobPayload):
    """A job's lease ran out without completion; the attempt counts."""

    node: str


@_declare(
    "JOB_DEAD",
    Alerting(
        lambda p: f"{p['job_type']} job {p['job_id']} of {p['config_key']} is dead: {p['error']}",
        rule="dead_letters",
        key=lambda p: f"{p['config_key']}/{p['job_type']}",
    ),
)
class JobDead(JobPayload):
    """A job used its last attempt and stays dead until retried by hand."""

    error: str


@_declare(
    "JOB_CANCELLED",
    Quiet("a person cancelled it"),
)
class JobCancelled(JobPayload):
    """A job was cancelled."""


@_declare(
    "BACKPRESSURE_CHANGED",
    Alerting(
        lambda p: f"queue {p['queue_type']} backpressure {p['previous']} -> {p['level']} (depth {p['depth']})",
        Severity.INFO,
    ),
)
class BackpressureChanged(Payload):
    """A queue's backpressure level changed."""

    queue_type: str
    level: str
    previous: str
    depth: int = Field(ge=0)


# --- cluster, daemons, health ---------------------------------------------------------


@_declare(
    "NODE_REGISTERED",
    Quiet("routine: a node joined; NODE_LAUNCH_FAILED alerts for one that never does"),
)
class NodeRegistered(Payload):
    """A node joined or rejoined the cluster."""

    node: str
    host: str
    provider: str


@_declare(
    "NODE_LOST",
    Alerting(
        lambda p: f"node {p['node']} lost (silent for {p['silent_s']:.0f} s); its jobs were re-queued",
        rule="node_lost",
        key=lambda p: str(p["node"]),
    ),
)
class NodeLost(Payload):
    """A node missed its heartbeats (silent_s: seconds since its last one)."""

    node: str
    silent_s: float = Field(ge=0)
    reason: str = ""


@_declare(
    "NODE_IDLE_SHUTDOWN",
    _good_news(
        lambda p: (
            f"node {p['node']} ({p['provider']}) idle {p['idle_s']:.0f} s: "
            + ("would be stopped (dry run)" if p["dry_run"] else "stopped")
        )
    ),
)
class NodeIdleShutdown(Payload):
    """A node was (or in a dry run would have been) terminated for being idle (idle_s: seconds)."""

    node: str
    provider: str
    idle_s: float = Field(ge=0)
    dry_run: bool
    cost_saved_per_hour: float | None = None


@_declare(
    "EVACUATION_FAILED",
    Alerting(
        lambda p: f"node {p['node']} cannot upload the artifacts only it holds (it is kept until it can): {p['error']}",
        Severity.CRITICAL,
        rule="evacuation_failed",
        key=lambda p: str(p["node"]),
    ),
)
class EvacuationFailed(Payload):
    """A draining node could not upload an artifact only it holds; it keeps the node and tries again."""

    node: str
    error: str


@_declare(
    "LEADER_ELECTED",
    _good_news(lambda p: f"{p['node']} now holds the {p['role']} lease (token {p['token']})"),
)
class LeaderElected(Payload):
    """A node acquired a leader or role lease (token: fencing token)."""

    role: str
    node: str
    token: int


@_declare(
    "LEADER_LOST",
    Alerting(
        lambda p: (
            f"{p['node']} released the {p['role']} lease (token {p['token']}) on a clean stop"
            if p.get("released")
            else f"{p['node']} no longer holds the {p['role']} lease (token {p['token']})"
        ),
        rule="failover",
        key=lambda p: str(p["role"]),
        when=lambda p: not p.get("released"),  # a clean stop is only logged
    ),
)
class LeaderLost(Payload):
    """A node lost a leader or role lease, or gave it up on a clean stop (released: True)."""

    role: str
    node: str
    token: int
    released: bool = False


@_declare(
    "CIRCUIT_OPENED",
    Alerting(
        lambda p: f"circuit {p['key']} opened after {p['failures']} failures",
        rule="circuit_open",
        key=lambda p: str(p["key"]),
    ),
)
class CircuitOpened(Payload):
    """A circuit breaker opened after repeated failures."""

    key: str
    failures: int = Field(ge=0)


@_declare(
    "CIRCUIT_CLOSED",
    _good_news(lambda p: f"circuit {p['key']} closed again"),
)
class CircuitClosed(Payload):
    """A circuit breaker closed again after successful trials."""

    key: str


@_declare(
    "DAEMON_CRASH_LOOP",
    Alerting(
        lambda p: f"daemon {p['daemon']} on {p['node']} is FAILED after {p['restarts']} restarts: {p['last_error']}",
        Severity.CRITICAL,
        rule="crash_loop",
        key=lambda p: f"{p['daemon']}@{p['node']}",
    ),
)
class DaemonCrashLoop(Payload):
    """A daemon restarted too often and was put in FAILED instead of restarted again."""

    node: str
    daemon: str
    restarts: int = Field(ge=0)
    last_error: str


# --- fleet ------------------------------------------------------------------------------


@_declare(
    "NODE_LAUNCHED",
    _good_news(lambda p: f"pool {p['pool']} launched node {p['node']} ({p['provider_id']})"),
)
class NodeLaunched(Payload):
    """A provider accepted the launch of a node's machine; its worker registers next."""

    pool: str
    node: str
    provider_id: str


@_declare(
    "NODE_LAUNCH_FAILED",
    Alerting(
        lambda p: f"pool {p['pool']}: launch of node {p['node']} failed: {p['reason']}",
        rule="launch_failed",
        key=lambda p: str(p["pool"]),
    ),
)
class NodeLaunchFailed(Payload):
    """A launch failed: the provider refused it, or the worker never registered in time."""

    pool: str
    node: str
    reason: str


@_declare(
    "NODE_TERMINATED",
    _good_news(lambda p: f"node {p['node']} of pool {p['pool']} is gone; it cost {p['cost']:.2f} in all"),
)
class NodeTerminated(Payload):
    """A fleet machine is gone; `cost` is what it cost in all (currency units)."""

    node: str
    pool: str
    cost: float = Field(ge=0)


@_declare(
    "FLEET_ORPHAN_FOUND",
    Alerting(
        lambda p: (
            f"pool {p['pool']}: the provider bills machine {p['provider_id']} that zeroloop does not know "
            f"({p['action']})"
        ),
        Severity.CRITICAL,
        rule="orphan_found",
        key=lambda p: f"{p['pool']}:{p['provider_id']}",
    ),
)
class FleetOrphanFound(Payload):
    """A provider lists a machine that zeroloop does not know: still billed, doing nothing for the loop."""

    pool: str
    provider_id: str
    node: str | None = None
    action: str


@_declare(
    "FLEET_BUDGET_REACHED",
    Alerting(
        lambda p: (
            f"pool {p['pool']}: {p['refused']} launch(es) refused: the fleet costs {p['cost_per_hour']:g}/h "
            f"of a budget of {p['budget_per_hour']:g}/h"
        ),
        rule="budget_reached",
        key=lambda p: str(p["pool"]),
    ),
)
class FleetBudgetReached(Payload):
    """A launch was refused because the fleet would cost more than the budget (per hour)."""

    pool: str
    budget_per_hour: float
    cost_per_hour: float
    refused: int = Field(ge=0)


# --- alert checks ---------------------------------------------------------------------


@_declare(
    "PROMOTION_STALLED",
    Alerting(
        lambda p: (
            f"{p['config_key']}: no model promoted for {p['hours']:.1f} h (production: {p.get('model_id') or 'none'})"
        ),
        rule="no_promotion",
        key=lambda p: str(p["config_key"]),
    ),
)
class PromotionStalled(ConfigPayload):
    """A running pipeline has promoted no model for longer than alerts.no_promotion_hours (hours: how long)."""

    hours: float = Field(ge=0)
    last_promotion_at: float | None = None
    model_id: str | None = None


@_declare(
    "DEAD_LETTERS_GROWING",
    Alerting(
        lambda p: (
            f"event dead letters growing: {p['letters']} pending or parked (was {p['previous']}); see `zeroloop dlq ls`"
        ),
        rule="dead_letters",
        key=lambda _p: "event dead letters",
    ),
)
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
