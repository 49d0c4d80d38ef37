"""The one typed settings object of zeroloop.

Every default zeroloop uses lives in this module and nowhere else. Values come, in
order of precedence, from keyword arguments, `ZEROLOOP_*` environment variables
(nested sections joined by a double underscore, e.g. `ZEROLOOP_EVENTS__POLL_INTERVAL_S`),
an optional TOML file (`./zeroloop.toml`, or the path in `ZEROLOOP_CONFIG_FILE`), and
the defaults below. `load_settings()` is the only place that reads the environment;
everything else receives a `Settings` instance through its constructor.
"""

from __future__ import annotations

import contextvars
import difflib
import os
import re
import socket
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self
from urllib.parse import urlsplit
from urllib.request import url2pathname

from pydantic import BaseModel, Field, SecretStr, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from zeroloop.errors import ConfigError
from zeroloop.plugins import check_syntax
from zeroloop.profiles import WORKER_PROFILES

ENV_PREFIX = "ZEROLOOP_"
CONFIG_FILE_ENV = "ZEROLOOP_CONFIG_FILE"
DEFAULT_CONFIG_FILE = "zeroloop.toml"
# `ZEROLOOP_*` variables that are not settings but are read on purpose: the settings file,
# and the PostgreSQL server of the test suite (tests/conftest.py, scripts/with-postgres).
ALLOWED_ENV = frozenset({CONFIG_FILE_ENV, "ZEROLOOP_TEST_POSTGRES_URL"})
# A node must miss at least this many heartbeats before it is declared lost.
NODE_LOST_MIN_HEARTBEATS = 2
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d{1,3})?)$")
_POOL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")
# Settings whose values are never repeated in an error message (they hold credentials).
_SECRET_SETTINGS = frozenset({("store", "url"), ("alerts", "webhooks", "url"), ("server", "token")})

_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^/:@\s]*:)(?P<secret>[^@\s]+)(?P<at>@)")
_SECRET_QUERY = re.compile(r"(?P<head>[?&](?:password|token|secret|key)=)(?P<secret>[^&\s]+)", re.I)


def redact(text: str) -> str:
    """Replace passwords inside URLs and secret query parameters with `***`."""
    text = _URL_PASSWORD.sub(r"\g<head>***\g<at>", text)
    return _SECRET_QUERY.sub(r"\g<head>***", text)


# Keys of backend options whose values are credentials (key, secret, token, password, sas_token, ...).
_SECRET_OPTION = re.compile(r"key|secret|token|passw|credential|auth|sas|signature", re.I)


def redact_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Backend options with every credential-like value replaced by `***`, nested mappings included."""
    shown: dict[str, Any] = {}
    for name, value in options.items():
        if isinstance(value, Mapping):
            shown[name] = redact_options(value)
        elif _SECRET_OPTION.search(str(name)) and value not in (None, ""):
            shown[name] = "***"
        else:
            shown[name] = redact(value) if isinstance(value, str) else value
    return shown


# Set while Settings validates its sources: a section built inside it lets its ValidationError
# through, so that the error keeps its whole location (`providers.gpu.max_nodes`) for Settings to name.
_NESTED: contextvars.ContextVar[bool] = contextvars.ContextVar("zeroloop_settings_nested", default=False)


class _Section(BaseModel):
    model_config = {"extra": "forbid", "validate_assignment": True}

    def __init__(self, **values: Any) -> None:
        """Validate; a bad value is a ConfigError naming the setting (the public API raises zeroloop's errors)."""
        try:
            super().__init__(**values)
        except ValidationError as exc:
            if _NESTED.get():
                raise
            raise ConfigError(_describe(exc, _section_of(type(self)), type(self))) from exc


class StoreSettings(_Section):
    """Where all state lives: a SQLite file (default) or a PostgreSQL server."""

    url: SecretStr | None = Field(
        default=None,
        description="sqlite:///path or postgresql://user:pass@host:port/db; "
        "unset means a SQLite file 'zeroloop.db' in the data directory",
    )
    busy_timeout_s: float = Field(default=30.0, gt=0, description="SQLite lock wait (seconds)")
    write_turn_max_s: float = Field(
        default=10.0, gt=0, description="SQLite: longest a writer may hold the write turn before it loses it (seconds)"
    )
    connect_timeout_s: float = Field(default=5.0, gt=0, description="PostgreSQL connect timeout (seconds)")
    pool_size: int = Field(default=5, ge=1, description="PostgreSQL connections kept per process")
    idle_in_transaction_timeout_s: float = Field(
        default=15.0,
        gt=0,
        description="PostgreSQL ends a session idle inside a transaction this long (seconds): a process paused "
        "mid-transaction (SIGSTOP, a frozen VM) then releases its locks instead of blocking the new leader",
    )
    ping_after_idle_s: float = Field(
        default=2.0, ge=0, description="PostgreSQL: ping a pooled connection idle this long before use (seconds)"
    )
    auto_upgrade: bool = Field(
        default=True, description="upgrade the embedded SQLite schema on start (PostgreSQL: use `zeroloop db upgrade`)"
    )


class ArtifactSettings(_Section):
    """Content-addressed artifact storage."""

    url: str | None = Field(
        default=None,
        description="any fsspec URL (file://, s3://, gs://, sftp://, memory://); unset means <data_dir>/artifacts",
    )
    cache_max_bytes: int = Field(default=20 * 1024**3, ge=0, description="local artifact cache limit (bytes)")
    bandwidth_limit_bytes_per_s: int = Field(default=0, ge=0, description="transfer limit (bytes/s); 0 is unlimited")
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="options for the fsspec backend of the location, e.g. {endpoint_url, key, secret, "
        "default_block_size} for s3:// (secret values are never printed)",
    )
    missing_max_pct: float = Field(
        default=10.0,
        ge=0,
        le=100,
        description="the most of the manifest's shared copies (%) that may lack their file at the location before "
        "`gc --repair` and `backup restore` take the location for wrong and refuse (unless --force)",
    )


class EventSettings(_Section):
    """The durable event bus."""

    poll_interval_s: float = Field(
        default=0.05, gt=0, le=60, description="SQLite: how often a waiting consumer checks the event signal (seconds)"
    )
    idle_poll_max_s: float = Field(
        default=0.4, gt=0, le=60, description="SQLite: the check slows down to this while no event comes (seconds)"
    )
    handler_timeout_s: float = Field(default=60.0, gt=0, description="time one handler call may take (seconds)")
    max_attempts: int = Field(default=5, ge=1, description="handler attempts before an event is dead-lettered")
    retry_initial_s: float = Field(default=0.5, ge=0, description="first handler retry delay (seconds)")
    retry_max_s: float = Field(default=30.0, ge=0, description="largest handler retry delay (seconds)")
    dlq_retry_interval_s: float = Field(default=300.0, gt=0, description="dead-letter re-delivery interval (seconds)")
    batch_size: int = Field(default=500, ge=1, description="events fetched per consumer read")
    retention_max_age_s: float = Field(default=7 * 86400.0, gt=0, description="events older than this are pruned")
    retention_max_count: int = Field(default=1_000_000, ge=1000, description="events kept at most")
    retention_interval_s: float = Field(default=600.0, gt=0, description="interval between retention prunes (seconds)")
    listen_fallback_s: float = Field(
        default=2.0, gt=0, description="re-read the log this often without a wake-up (NOTIFY, signal file) (seconds)"
    )
    dlq_max_retries: int = Field(
        default=12, ge=0, description="automatic dead-letter re-deliveries before a letter is parked for a human"
    )
    outage_retry_max_s: float = Field(
        default=5.0, gt=0, description="longest wait between deliveries while the store is unavailable (seconds)"
    )
    max_payload_bytes: int = Field(
        default=64 * 1024, ge=1024, description="largest event payload, as JSON (bytes); larger data is an artifact"
    )

    @model_validator(mode="after")
    def _ordered(self) -> EventSettings:
        if self.retry_initial_s > self.retry_max_s:
            raise ValueError(
                f"retry_initial_s ({self.retry_initial_s}) must not exceed retry_max_s ({self.retry_max_s})"
            )
        return self


class QueueSettings(_Section):
    """The work queue and its backpressure."""

    lease_s: float = Field(default=60.0, gt=0, description="job lease length (seconds)")
    reaper_interval_s: float = Field(default=5.0, gt=0, description="expired-lease scan interval (seconds)")
    default_max_attempts: int = Field(default=3, ge=1, description="attempts before a job is dead")
    default_timeout_s: float = Field(default=3600.0, gt=0, description="default job run-time limit (seconds)")
    stall_after_s: float = Field(
        default=600.0,
        ge=0,
        description="a running job whose work shows no progress this long (no progress report, its Python stack "
        "unmoved, its commands using no CPU: a hung CUDA call, a deadlock) is killed and retried (seconds); 0: never",
    )
    retry_initial_s: float = Field(default=5.0, ge=0, description="first job retry delay (seconds)")
    retry_max_s: float = Field(default=600.0, ge=0, description="largest job retry delay (seconds)")
    soft_limit: int = Field(default=200, ge=1, description="queued jobs per type where backpressure starts")
    hard_limit: int = Field(default=1000, ge=1, description="queued jobs per type where producers are refused")
    memory_soft_pct: float = Field(default=80.0, gt=0, le=100, description="node memory use that adds pressure (%)")
    memory_hard_pct: float = Field(default=95.0, gt=0, le=100, description="node memory use that stops producers (%)")
    disk_soft_pct: float = Field(default=85.0, gt=0, le=100, description="data-disk use that adds pressure (%)")
    disk_hard_pct: float = Field(default=97.0, gt=0, le=100, description="data-disk use that stops producers (%)")
    concurrency_per_config: dict[str, int] = Field(
        default_factory=lambda: {"train": 1, "export": 1},
        description="job type -> most jobs of that type running at once for one config key",
    )
    max_payload_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="largest job payload and job result, each as JSON (bytes)"
    )

    @field_validator("concurrency_per_config")
    @classmethod
    def _limits(cls, value: dict[str, int]) -> dict[str, int]:
        for job_type, limit in value.items():
            if not re.fullmatch(r"[a-z0-9][a-z0-9_.\-]{0,79}", job_type):
                raise ValueError(f"job type {job_type!r} is not a valid type name (a-z 0-9 _ . -)")
            if limit < 1:
                raise ValueError(f"limit for {job_type!r} must be at least 1, got {limit}")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> QueueSettings:
        pairs = [
            ("soft_limit", "hard_limit"),
            ("memory_soft_pct", "memory_hard_pct"),
            ("disk_soft_pct", "disk_hard_pct"),
            ("retry_initial_s", "retry_max_s"),
            # A reaper slower than the lease leaves expired jobs stuck for longer than the lease itself.
            ("reaper_interval_s", "lease_s"),
        ]
        for soft, hard in pairs:
            if getattr(self, soft) > getattr(self, hard):
                raise ValueError(f"{soft} ({getattr(self, soft)}) must not exceed {hard} ({getattr(self, hard)})")
        return self


class DaemonSettings(_Section):
    """Daemon supervision."""

    restart_initial_s: float = Field(default=10.0, ge=0, description="first restart delay (seconds)")
    restart_max_s: float = Field(default=300.0, ge=0, description="largest restart delay (seconds)")
    restart_reset_after_s: float = Field(
        default=600.0, ge=0, description="healthy time that resets the backoff (seconds)"
    )
    crash_loop_restarts: int = Field(default=5, ge=1, description="restarts within the window that mean a crash loop")
    crash_loop_window_s: float = Field(default=900.0, gt=0, description="crash-loop detection window (seconds)")
    health_interval_s: float = Field(default=10.0, gt=0, description="health check interval (seconds)")
    drain_deadline_s: float = Field(default=30.0, ge=0, description="graceful stop deadline per daemon (seconds)")
    supervise_interval_s: float = Field(default=0.5, gt=0, description="supervision pass interval (seconds)")
    outage_retry_max_s: float = Field(
        default=5.0, gt=0, description="longest wait between retries while the store is unavailable (seconds)"
    )

    @model_validator(mode="after")
    def _ordered(self) -> DaemonSettings:
        if self.restart_initial_s > self.restart_max_s:
            raise ValueError(
                f"restart_initial_s ({self.restart_initial_s}) must not exceed restart_max_s ({self.restart_max_s})"
            )
        return self


class ClusterSettings(_Section):
    """This node and the cluster it belongs to."""

    node_id: str = Field(default_factory=socket.gethostname, min_length=1, description="this node's unique name")
    provider: str = Field(
        default="local", description="where this node runs: local, lambda, vast, runpod, command, ..."
    )
    labels: list[str] = Field(default_factory=list, description="free-form capability labels")
    pool: str | None = Field(default=None, description="the provider pool that launched this node (set by the fleet)")
    slots: int = Field(
        default=0,
        ge=0,
        description="jobs this node runs at once; 0 = one per GPU, else one (set per pool by the fleet)",
    )
    max_jobs_per_type: dict[str, int] = Field(
        default_factory=dict, description="job type -> most jobs of that type this node runs at once, e.g. {train = 1}"
    )
    utilisation_target_pct: float | None = Field(
        default=None,
        gt=0,
        le=100,
        description="run as many slots (up to `slots`) as keep GPU (else CPU) utilisation near this (%); unset: all",
    )
    slot_interval_s: float = Field(default=30.0, gt=0, description="time between slot count changes (seconds)")
    cost_per_hour: float | None = Field(default=None, ge=0, description="what this node costs (currency units/hour)")
    heartbeat_interval_s: float = Field(default=10.0, gt=0, description="node heartbeat interval (seconds)")
    node_lost_after_s: float = Field(default=60.0, gt=0, description="silence after which a node is lost (seconds)")
    leader_lease_s: float = Field(default=15.0, gt=0, description="leader and role lease length (seconds)")
    orphan_after_s: float = Field(
        default=1800.0,
        ge=0,
        description="dead-man switch of a machine the fleet launched: it stops itself when it could not heartbeat, "
        "or no coordinator held the leader lease, for this long, so it stops billing when nobody is left to stop "
        "it; well past any outage to ride out (seconds); 0: never",
    )

    @field_validator("node_id", "provider")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not value.isprintable() or value != value.strip():
            raise ValueError(f"{value!r} holds control characters or surrounding spaces: use a plain name")
        return value

    @field_validator("labels")
    @classmethod
    def _printable_labels(cls, value: list[str]) -> list[str]:
        for label in value:
            cls._printable(label)
        return value

    @model_validator(mode="after")
    def _heartbeats_fit(self) -> ClusterSettings:
        # One late heartbeat must not make a node lost: its silence has to span several of them.
        least = NODE_LOST_MIN_HEARTBEATS * self.heartbeat_interval_s
        if self.node_lost_after_s < least:
            raise ValueError(
                f"node_lost_after_s ({self.node_lost_after_s}) must be at least {NODE_LOST_MIN_HEARTBEATS} x "
                f"heartbeat_interval_s ({self.heartbeat_interval_s}), i.e. {least:g}: raise it or heartbeat more often"
            )
        if self.orphan_after_s and self.orphan_after_s < self.node_lost_after_s:
            # The coordinator must give a silent node up (and re-queue its jobs) before the node gives itself up.
            raise ValueError(
                f"orphan_after_s ({self.orphan_after_s}) must be at least node_lost_after_s ({self.node_lost_after_s}) "
                "or 0 (never)"
            )
        return self


class HealthSettings(_Section):
    """Circuit breakers and the system health score."""

    breaker_failure_threshold: int = Field(default=3, ge=1, description="failures that open a circuit")
    breaker_recovery_s: float = Field(default=300.0, gt=0, description="open time before a half-open trial (seconds)")
    breaker_half_open_successes: int = Field(default=1, ge=1, description="trial successes that close a circuit")
    error_window_s: float = Field(default=600.0, gt=0, description="window for the recent-error rate (seconds)")
    pause_below_score: float = Field(default=0.4, ge=0, le=1, description="pipeline pauses below this health score")
    resume_above_score: float = Field(default=0.6, ge=0, le=1, description="paused pipeline resumes above this score")

    @model_validator(mode="after")
    def _hysteresis(self) -> HealthSettings:
        if self.resume_above_score < self.pause_below_score:
            raise ValueError("resume_above_score must be at least pause_below_score (the pause rule needs hysteresis)")
        return self


class IdleSettings(_Section):
    """Idle shutdown: pools scale down by their own `idle_s` and `drain_s`; hand-started workers only when listed here.

    A node is idle when it has run no job for its idle time and holds no only copy of an
    artifact; its utilisation is shown as evidence but decides nothing (a shared machine's
    load is not this node's work).
    """

    enabled: bool = Field(default=True, description="let the idle-shutdown daemon act at all")
    dry_run: bool = Field(
        default=False, description="only report what would be stopped (NODE_IDLE_SHUTDOWN dry_run=true), stop nothing"
    )
    threshold_s: dict[str, float] = Field(
        default_factory=dict,
        description="workers started by hand, by provider (or 'default') -> idle time before they are told to stop "
        "(seconds); a provider not listed is never stopped for idleness. Pool machines use their pool's idle_s",
    )
    min_nodes: dict[str, int] = Field(
        default_factory=lambda: {"default": 0},
        description="workers started by hand, by provider (or 'default') -> nodes always kept",
    )
    drain_period_s: float = Field(
        default=300.0, ge=0, description="workers started by hand: drain time before they are stopped (seconds)"
    )
    interval_s: float = Field(default=60.0, gt=0, description="idle-shutdown check interval (seconds)")

    @field_validator("threshold_s")
    @classmethod
    def _non_negative(cls, value: dict[str, float]) -> dict[str, float]:
        for provider, seconds in value.items():
            if seconds < 0:
                raise ValueError(f"idle time of {provider!r} must not be negative, got {seconds}")
        return value


class PoolSettings(_Section):
    """One pool of machines that one provider launches: e.g. `[providers.gpu]` with `kind = "slurm"`."""

    kind: str = Field(
        description="the provider that launches this pool: local, slurm, skypilot, command, "
        "or your own: package.module:ClassName or an entry point of group zeroloop.providers"
    )
    profile: str = Field(default="training_node", description="worker profile the launched machines run")
    min_nodes: int = Field(default=0, ge=0, description="nodes kept running even without work (lost ones replaced)")
    max_nodes: int = Field(default=1, ge=0, description="most nodes of this pool at once")
    scale_down: bool = Field(
        default=True,
        description="stop this pool's machines that have run no job for idle_s (above min_nodes): what zeroloop "
        "launches, zeroloop stops",
    )
    idle_s: float = Field(
        default=600.0, gt=0, description="a machine that has run no job this long is drained, then stopped (seconds)"
    )
    drain_s: float = Field(
        default=60.0,
        ge=0,
        description="an idle machine drains (claims nothing, uploads what only it holds) this long before it is "
        "stopped, and never while it holds an only copy (seconds)",
    )
    slots: int = Field(default=1, ge=1, description="jobs one node of this pool runs at once")
    gpus: int = Field(default=0, ge=0, description="GPUs per machine")
    cpus: int = Field(default=0, ge=0, description="CPU cores per machine; 0 = the provider's default")
    memory_gb: float = Field(default=0.0, ge=0, description="memory per machine (GiB); 0 = the provider's default")
    labels: list[str] = Field(default_factory=list, description="capability labels the machines get")
    price_per_hour: float | None = Field(default=None, ge=0, description="cost of one machine (currency units/hour)")
    launch_timeout_s: float = Field(
        default=600.0, gt=0, description="a launched machine that has not registered by then is failed (seconds)"
    )
    env: dict[str, str] = Field(default_factory=dict, description="extra environment for the worker")
    server_url: str | None = Field(
        default=None,
        description="launched workers reach the cluster through this `zeroloop serve` (http(s)://host:port) "
        "with a token of their own; unset: through the store and artifact location directly",
    )
    options: dict[str, Any] = Field(default_factory=dict, description="the provider kind's own options")

    @field_validator("kind")
    @classmethod
    def _kind_syntax(cls, value: str) -> str:
        return check_syntax(value)

    @field_validator("profile")
    @classmethod
    def _worker_profile(cls, value: str) -> str:
        if value not in WORKER_PROFILES:
            raise ValueError(f"{value!r} is not a worker profile: choose one of {', '.join(WORKER_PROFILES)}")
        return value

    @field_validator("server_url")
    @classmethod
    def _server_http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("give an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _bounds(self) -> PoolSettings:
        if self.max_nodes < self.min_nodes:
            raise ValueError(f"max_nodes ({self.max_nodes}) is below min_nodes ({self.min_nodes})")
        return self


class AutoscalerSettings(_Section):
    """The autoscaler: launches pool machines for queued work, replaces lost ones, within a budget."""

    enabled: bool = Field(default=True, description="let the autoscaler launch machines at all")
    interval_s: float = Field(default=10.0, gt=0, description="autoscaler tick interval (seconds)")
    budget_per_hour: float | None = Field(
        default=None, gt=0, description="most the whole fleet may cost (currency units/hour); unset: no budget"
    )
    launch_cooldown_s: float = Field(default=30.0, ge=0, description="least time between launches of a pool (seconds)")
    max_launches_per_tick: int = Field(default=4, ge=1, description="most machines launched in one tick, per pool")
    retry_initial_s: float = Field(default=30.0, ge=0, description="wait after a failed launch (seconds), doubling")
    retry_max_s: float = Field(default=900.0, ge=0, description="longest wait after failed launches (seconds)")
    orphans: Literal["report", "terminate"] = Field(
        default="report", description="what to do with a machine the provider bills but zeroloop does not know"
    )


_BASELINES: tuple[str, ...] = ("random", "mcts")
# OpenSpiel's own MCTSBot (uct_c 2, one random rollout per leaf, solving proven nodes) at these simulations: a
# yardstick nobody here wrote, as baselines `mctsbot-N` (docs/pipeline.md, "A ladder of outside bots").
LADDER: tuple[str, ...] = tuple(f"mctsbot-{n}" for n in (10, 30, 100, 300, 1000, 3000))
BASELINE_NAMES: tuple[str, ...] = (*_BASELINES, *LADDER)  # the baselines a match may name as a player by default
_MCTSBOT = re.compile(r"^mctsbot-(?P<simulations>[1-9][0-9]{0,5})$")


def baseline_kind(name: str) -> Literal["random", "mcts", "mctsbot"] | None:
    """The kind of baseline `name` names ("random", "mcts", or "mctsbot-N": OpenSpiel's MCTSBot with N
    simulations, 1 to 999,999), or None when it names none."""
    if name in ("random", "mcts"):
        return name  # type: ignore[return-value]
    return "mctsbot" if _MCTSBOT.match(name) else None


def mctsbot_simulations(name: str) -> int:
    """N of a baseline named `mctsbot-N` (ValueError for any other name)."""
    found = _MCTSBOT.match(name)
    if found is None:
        raise ValueError(f"{name!r} names no MCTSBot baseline (mctsbot-N)")
    return int(found["simulations"])


def baseline_order(names: list[str], mcts_simulations: int) -> list[str]:
    """Baselines from weakest to strongest: random, then by simulations (the workload's pure MCTS at
    `mcts_simulations`, OpenSpiel's MCTSBot at N). The policy judges a first model against the weakest and
    breaks ties between equals against the strongest."""

    def strength(name: str) -> tuple[int, int]:
        if name == "random":
            return (0, 0)
        return (1, mcts_simulations if name == "mcts" else mctsbot_simulations(name))

    return sorted(names, key=strength)


ALERT_RULES = (
    "crash_loop",
    "dead_letters",
    "circuit_open",
    "pipeline_paused",
    "node_lost",
    "budget_reached",
    "production_regression",
    "no_promotion",
    "orphan_found",
    "launch_failed",
    "evacuation_failed",
    "failover",
    "artifact_corrupt",
    "disk_space_low",
    "plateau",
    "quality_warning",
)
"""The alert rules; each event type names its own in zeroloop/events/catalogue.py (see docs/observability.md)."""


class WebhookSettings(_Section):
    """One webhook that receives alerts: a generic JSON POST, or a Slack-compatible `{"text": ...}`."""

    url: SecretStr = Field(description="the webhook's URL (a secret: it often holds a token; never logged)")
    format: Literal["json", "slack"] = Field(
        default="json", description='json: the alert as a JSON object; slack: {"text": summary} (Slack, Mattermost)'
    )

    @field_validator("url")
    @classmethod
    def _http(cls, value: SecretStr) -> SecretStr:
        parsed = urllib.parse.urlsplit(value.get_secret_value())
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            # The URL is a secret: say what is wrong with it without repeating it.
            raise ValueError(f"a webhook URL must be http(s)://host/...; this one's scheme is {parsed.scheme!r}")
        return value


class AlertSettings(_Section):
    """Operational alerts: crash loops, lost nodes, open circuits, corrupt artifacts, ..."""

    webhooks: list[WebhookSettings] = Field(
        default_factory=list, description="webhooks that receive alerts of the enabled rules ([[alerts.webhooks]])"
    )
    rules: list[str] = Field(
        default_factory=lambda: list(ALERT_RULES), description="alert rules whose alerts go to the webhooks"
    )
    dedup_s: float = Field(
        default=3600.0, ge=0, description="an alert of the same rule about the same thing is sent once per (seconds)"
    )
    rate_limit_s: float = Field(
        default=300.0, ge=0, description="least time between two webhook alerts of one rule (seconds)"
    )
    webhook_timeout_s: float = Field(default=5.0, gt=0, le=60, description="time one webhook request may take (s)")
    webhook_attempts: int = Field(default=3, ge=1, le=10, description="tries of one webhook delivery")
    webhook_retry_s: float = Field(default=1.0, ge=0, le=30, description="wait between webhook tries (seconds)")
    no_promotion_hours: float | None = Field(
        default=24.0, gt=0, description="alert when a running pipeline promotes nothing for this long (hours)"
    )
    check_interval_s: float = Field(
        default=300.0, gt=0, description="how often the alert_checks daemon looks for stalls (seconds)"
    )

    command: str | None = Field(
        default=None,
        description="command run for each alert, with {event}, {summary} and {json} replaced "
        "(e.g. a curl to a chat webhook); unset: alerts are only logged",
    )
    timeout_s: float = Field(default=10.0, gt=0, description="time an alert command may run (seconds)")

    @field_validator("rules")
    @classmethod
    def _known_rules(cls, value: list[str]) -> list[str]:
        unknown = [rule for rule in value if rule not in ALERT_RULES]
        if unknown:
            raise ValueError(f"unknown alert rule {', '.join(unknown)}: choose from {', '.join(ALERT_RULES)}")
        return value

    @field_validator("command")
    @classmethod
    def _known_placeholders(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                value.format_map({"event": "", "summary": "", "json": ""})
            except (KeyError, ValueError, IndexError) as exc:
                raise ValueError(f"placeholders may only be {{event}}, {{summary}} and {{json}} ({exc})") from None
        return value


class _PerKey(_Section):
    """A section one config key may see differently: `overrides` maps a config key to values of this section
    that replace the defaults for that key only (a variant key `K~tNvM` sees K's, then its own). Only the
    settings in PER_KEY may be replaced so: each is read through `for_key` wherever it is used."""

    PER_KEY: ClassVar[frozenset[str]] = frozenset()
    overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _overrides_valid(self) -> _PerKey:
        for config_key, values in self.overrides.items():
            unknown = sorted(set(values) - self.PER_KEY)
            if unknown:
                raise ValueError(
                    f"overrides[{config_key!r}] names {unknown}, which no config key may set for itself; these "
                    f"may: {', '.join(sorted(self.PER_KEY))}"
                )
            try:
                self.for_key(config_key)  # a variant key's values are checked over its base key's
            except ValidationError as exc:
                said = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'values'}: {e['msg']}" for e in exc.errors())
                raise ValueError(f"overrides[{config_key!r}]: {said}") from None
        return self

    def _build(self, values: Mapping[str, Any]) -> Self:
        nested = _NESTED.set(True)
        try:
            return type(self)(**{**self.model_dump(exclude={"overrides"}), **values, "overrides": {}})
        finally:
            _NESTED.reset(nested)

    def for_key(self, config_key: str) -> Self:
        """This section as `config_key` sees it (the section itself when no override applies)."""
        layers = [self.overrides.get(key, {}) for key in dict.fromkeys((config_key.split("~", 1)[0], config_key))]
        values = {name: value for layer in layers for name, value in layer.items()}
        return self._build(values) if values else self


def _pipeline_presets() -> dict[str, dict[str, Any]]:
    # connect four on a CPU (docs/workload.md, round 2): rounds every 2,048 new samples, each training 18 rows
    # per new sample, scored 0.23 [0.15, 0.31] against MCTSBot-1000 after 15 CPU-minutes where 4,096 samples
    # and 400 steps a round scored 0.11 [0.05, 0.17] (with evaluation.overrides' gate "none" beside it).
    return {"connect_four_2p": {"train_after_samples": 2048, "train_samples_per_sample": 18.0}}


def _evaluation_presets() -> dict[str, dict[str, Any]]:
    # connect four: no gating matches (KataGo's choice); tournaments rate each model, the watchdog rolls back.
    return {"connect_four_2p": {"gate": "none"}}


class PipelineSettings(_PerKey):
    """Stage triggers, the promotion policy and selfplay scheduling."""

    PER_KEY = frozenset(
        {"train_after_samples", "train_samples_per_sample", "window_samples", "window_min_samples", "window_growth",
         "window_taper", "eval_games", "min_eval_games", "baseline_games", "promote_win_rate", "promote_confidence",
         "baseline_floor", "baseline_margin", "promotion_cooldown_s"}
    )  # fmt: skip

    train_after_samples: int = Field(default=4096, ge=1, description="new samples that trigger export and training")
    train_samples_per_sample: float = Field(
        default=0.0,
        ge=0,
        description="training rows drawn (optimizer steps x workload train_batch_size) per new selfplay sample: a "
        "round trains ceil(this x its new samples / batch size) steps, so training keeps pace with selfplay; "
        "0: every round trains the workload's train_steps",
    )
    window_samples: int = Field(
        default=100_000, ge=1, description="most samples in a training window (the window grows to it)"
    )
    window_min_samples: int = Field(
        # At window_samples the window is fixed, as measured best (docs/workload.md, run A against run B).
        default=100_000,
        ge=1,
        description="the window holds every sample up to this many; beyond, it grows as a power of the samples "
        "played (KataGo's taper) up to window_samples; at window_samples (the default) the window is fixed",
    )
    window_growth: float = Field(
        default=0.75, gt=0, le=1, description="exponent of the window's growth with the samples played"
    )
    window_taper: float = Field(
        default=0.4, gt=0, le=1, description="slope of the window's growth beyond window_min_samples (KataGo: 0.4)"
    )
    eval_games: int = Field(default=40, ge=2, description="most games a candidate plays against the current best")
    min_eval_games: int = Field(default=10, ge=1, description="fewest games a promotion may rest on")
    promote_win_rate: float = Field(
        default=0.5, gt=0, lt=1, description="the candidate's score lower bound must exceed this to promote"
    )
    promote_confidence: float = Field(default=0.9, gt=0.5, lt=1, description="one-sided confidence of that bound")
    baselines: list[str] = Field(
        default_factory=lambda: list(_BASELINES),
        description="baselines every candidate also plays and tournaments rate: random, mcts (the workload's pure "
        "MCTS), mctsbot-N (OpenSpiel's MCTSBot with N simulations; e.g. the ladder mctsbot-10 ... mctsbot-3000)",
    )
    baseline_games: int = Field(default=20, ge=2, description="games against each baseline")
    baseline_floor: float | None = Field(default=None, ge=0, le=1, description="optional score floor against baselines")
    baseline_margin: float = Field(
        default=0.05, ge=0, le=1, description="score gain against the strongest baseline that promotes an equal model"
    )
    promotion_cooldown_s: float = Field(default=0.0, ge=0, description="least time between promotions (seconds)")
    default_config_key: str = Field(
        default="tic_tac_toe_2p",
        description="the pipeline the library's initialize_all_coordinators(auto_trigger_pipeline=True) starts "
        "when the store has none",
    )
    selfplay_games_per_job: int = Field(default=32, ge=1, description="games in one selfplay job")
    selfplay_queue_target: int = Field(default=8, ge=1, description="selfplay jobs kept queued across all configs")
    scheduler_interval_s: float = Field(default=2.0, gt=0, description="selfplay top-up interval (seconds)")
    overrides: dict[str, dict[str, Any]] = Field(
        default_factory=_pipeline_presets,
        description="config key -> pipeline settings replacing the ones above for that config only, e.g. "
        "{'connect_four_2p': {'train_after_samples': 2048}} (setting this replaces the whole table, built-in "
        "entries included)",
    )

    @field_validator("baselines")
    @classmethod
    def _known_baselines(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if baseline_kind(name) is None]
        if unknown:
            raise ValueError(f"unknown baselines {unknown}: choose random, mcts or mctsbot-N (N simulations)")
        if len(set(value)) != len(value):
            raise ValueError(f"a baseline is named twice in {value}")
        return value

    @model_validator(mode="after")
    def _games_fit(self) -> PipelineSettings:
        if self.min_eval_games > self.eval_games:
            raise ValueError(f"min_eval_games ({self.min_eval_games}) must not exceed eval_games ({self.eval_games})")
        return self


class EvaluationSettings(_PerKey):
    """Gating, the joint rating, tournaments and the feedback loops (see docs/pipeline.md)."""

    PER_KEY = frozenset(
        {"gate", "gate_margin_elo", "gate_alpha", "gate_beta", "watchdog_bound_elo", "watchdog_confidence",
         "watchdog_min_games"}
    )  # fmt: skip

    gate: Literal["non_inferior", "sprt", "better", "none"] = Field(
        default="non_inferior",
        description="promotion rule against the production model: non_inferior (the Elo lower bound is above "
        "-gate_margin_elo), sprt (an SPRT of Elo <= -gate_margin_elo against Elo >= 0 accepts the latter), "
        "better (the score lower bound beats pipeline.promote_win_rate), none (every candidate is promoted "
        "once trained, without matches; tournaments rate it and the regression watchdog rolls it back)",
    )
    gate_margin_elo: float = Field(
        default=50.0, gt=0, description="how much weaker than production a candidate may be and still pass (Elo)"
    )
    gate_alpha: float = Field(default=0.05, gt=0, lt=0.5, description="sprt gate: chance of passing a worse model")
    gate_beta: float = Field(default=0.1, gt=0, lt=0.5, description="sprt gate: chance of failing an equal model")
    rating_prior_games: float = Field(
        default=1.0, gt=0, description="virtual drawn games added to every pair that met, so sweeps rate finitely"
    )
    tournament_interval_s: float = Field(
        default=1800.0, ge=0, description="time between round robins per config key (seconds); 0: none"
    )
    tournament_models: int = Field(default=4, ge=2, description="most recent promoted models in a round robin")
    tournament_games: int = Field(default=20, ge=2, description="games per pairing in a round robin")
    watchdog_bound_elo: float = Field(
        default=50.0, gt=0, description="production is rolled back once it is clearly this far below its predecessor"
    )
    watchdog_confidence: float = Field(
        default=0.95, gt=0.5, lt=1, description="one-sided confidence the watchdog needs before it rolls back"
    )
    watchdog_min_games: int = Field(default=20, ge=1, description="fewest head-to-head games a rollback rests on")
    feedback_interval_s: float = Field(
        default=300.0, gt=0, description="how often the quality monitor, plateau check and curriculum run (seconds)"
    )
    velocity_window_s: float = Field(
        default=3600.0, gt=0, description="Elo velocity: production's rating gain over this time (seconds)"
    )
    plateau_window_s: float = Field(default=7200.0, gt=0, description="time a plateau is judged over (seconds)")
    plateau_min_gain_elo: float = Field(
        default=25.0, ge=0, description="less production gain than this over plateau_window_s is a plateau (Elo)"
    )
    plateau_min_rounds: int = Field(default=3, ge=1, description="rounds judged in the window before a plateau counts")
    plateau_weight: float = Field(
        default=0.5, gt=0, le=1, description="selfplay share factor of a config on a plateau (its budget moves on)"
    )
    quality_max_draw_rate: float = Field(
        default=0.95, gt=0, le=1, description="selfplay draw rate above this is flagged (when batches record draws)"
    )
    quality_min_policy_entropy: float = Field(
        default=0.05, ge=0, description="mean search-policy entropy below this is flagged (nats; when recorded)"
    )
    quality_max_length_drop: float = Field(
        default=0.5, gt=0, lt=1, description="a fall of mean game length by more than this share is flagged"
    )
    quality_min_games: int = Field(
        default=16, ge=2, description="games a batch needs before one outcome only in it is flagged"
    )
    quality_exclude_flagged: bool = Field(
        default=True, description="game batches the quality monitor flags stay out of later training windows"
    )
    overrides: dict[str, dict[str, Any]] = Field(
        default_factory=_evaluation_presets,
        description="config key -> evaluation settings replacing the ones above for that config only, e.g. "
        "{'connect_four_2p': {'gate': 'none'}} (setting this replaces the whole table, built-in entries included)",
    )


def _default_overrides() -> dict[str, dict[str, int | float]]:
    # Per-game presets. tic-tac-toe is tiny: a small net and short training make a round take seconds.
    return {
        "tic_tac_toe_2p": {
            "blocks": 2,
            "channels": 32,
            "simulations": 100,
            "parallel_games": 32,
            "train_steps": 300,
            "baseline_simulations": 100,
        },
        # chinese checkers (3 players): a fresh network's games run to OpenSpiel's 1,000-move cap, and so do
        # random playouts: selfplay games are cut off at 300 moves and valued by progress, the baseline's
        # playouts at 60; a small search keeps a selfplay job to minutes.
        "chinese_checkers_3p": {
            "blocks": 3,
            "channels": 64,
            "simulations": 48,
            "parallel_games": 32,
            "train_steps": 300,
            "selfplay_max_moves": 300,
            "eval_simulations": 32,
            "baseline_simulations": 48,
            "baseline_rollout_moves": 60,
            "eval_max_moves": 300,
        },
        # connect four on a CPU: a narrower net trains and searches fast enough for hourly progress; half of
        # each value target is the search's own value (docs/workload.md, round 2: it scored highest at 15
        # CPU-minutes).
        "connect_four_2p": {
            "blocks": 3,
            "channels": 48,
            "simulations": 120,
            "parallel_games": 96,
            "train_steps": 400,
            "search_value_weight": 0.5,
        },
    }


class WorkloadSettings(_Section):
    """What the loop runs."""

    kind: str = Field(
        default="alphazero",
        description="alphazero (built in), command (your commands), or your own class: "
        "package.module:ClassName or an entry point of group zeroloop.workloads",
    )
    command_file: Path | None = Field(default=None, description="TOML file mapping operations to command templates")
    device: str = Field(
        default="auto", description="torch device for training and inference: auto (CUDA if present), cpu, cuda:N"
    )
    torch_threads: int = Field(default=0, ge=0, description="CPU threads torch uses per worker; 0 keeps its default")
    inference_precision: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto",
        description="dtype of search inference: auto is bfloat16 on a CPU with native bfloat16 (AVX512-BF16, AMX), "
        "else float32; training is always float32",
    )
    game_params: dict[str, dict[str, int | float | bool | str]] = Field(
        default_factory=dict,
        description="config key -> OpenSpiel game parameters (unset: OpenSpiel's defaults), "
        "e.g. {'hex_2p': {'board_size': 7}}",
    )
    overrides: dict[str, dict[str, int | float]] = Field(
        default_factory=_default_overrides,
        description="config key -> values replacing the AlphaZero settings below for that config "
        "(setting this replaces the whole table, built-in entries included)",
    )
    blocks: int = Field(default=6, ge=0, description="residual blocks in the policy-value network")
    channels: int = Field(default=64, ge=1, description="convolution channels in the policy-value network")
    value_hidden: int = Field(default=64, ge=1, description="hidden units of the value head")
    simulations: int = Field(default=200, ge=1, description="MCTS simulations per selfplay move")
    c_puct: float = Field(default=1.5, gt=0, description="PUCT exploration constant")
    dirichlet_alpha: float = Field(default=0.5, gt=0, description="Dirichlet noise concentration at the selfplay root")
    dirichlet_epsilon: float = Field(default=0.25, ge=0, le=1, description="share of Dirichlet noise in root priors")
    temperature_moves: int = Field(default=10, ge=0, description="selfplay moves sampled by visit count; argmax after")
    parallel_games: int = Field(default=128, ge=1, description="games searched in lockstep; the inference batch size")
    train_batch_size: int = Field(default=256, ge=1, description="training samples per optimizer step")
    train_steps: int = Field(default=1000, ge=1, description="optimizer steps per training run")
    search_value_weight: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="share of the search's own value of a position in its value target, the rest the game's "
        "outcome (0: the outcome alone, as AlphaZero)",
    )
    learning_rate: float = Field(default=0.01, gt=0, description="SGD learning rate")
    momentum: float = Field(default=0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(default=1e-4, ge=0, description="L2 weight decay")
    checkpoint_every_steps: int = Field(default=200, ge=1, description="optimizer steps between checkpoints")
    progress_every_steps: int = Field(default=20, ge=1, description="optimizer steps between progress reports")
    eval_simulations: int = Field(default=100, ge=1, description="MCTS simulations per move in evaluation matches")
    eval_temperature_moves: int = Field(default=2, ge=0, description="opening moves sampled in evaluation, for variety")
    eval_opening_moves: int = Field(
        default=2, ge=0, description="uniformly random moves opening each evaluation game, the same from every seat"
    )
    eval_parallel_games: int = Field(default=20, ge=2, description="evaluation games played in lockstep (even)")
    eval_max_moves: int = Field(
        default=0,
        ge=0,
        description="evaluation games still running after this many moves are adjudicated by the game's progress "
        "measure (or its returns so far); 0: played to the game's own end",
    )
    baseline_simulations: int = Field(default=200, ge=1, description="simulations of the pure-MCTS baseline")
    baseline_rollouts: int = Field(default=1, ge=1, description="random rollouts per leaf of the pure-MCTS baseline")
    baseline_rollout_moves: int = Field(
        default=0,
        ge=0,
        description="the baseline's random playouts stop after this many moves and are valued like a selfplay game "
        "cut off (the game's progress measure); 0: played to the end",
    )
    sprt_elo0: float = Field(default=0.0, description="SPRT null hypothesis: Elo difference (Elo)")
    sprt_elo1: float = Field(default=35.0, description="SPRT alternative hypothesis: Elo difference (Elo)")
    sprt_alpha: float = Field(default=0.05, gt=0, lt=0.5, description="SPRT false-positive rate")
    sprt_beta: float = Field(default=0.05, gt=0, lt=0.5, description="SPRT false-negative rate")
    elo_confidence: float = Field(default=0.95, gt=0, lt=1, description="confidence of the reported Elo interval")
    gumbel: bool = Field(
        default=False, description="Gumbel root search (sequential halving) instead of PUCT at the root"
    )
    gumbel_considered: int = Field(default=16, ge=1, description="most root actions the Gumbel search considers")
    gumbel_c_visit: float = Field(default=50.0, gt=0, description="Gumbel sigma constant c_visit (visits)")
    gumbel_c_scale: float = Field(default=0.1, gt=0, description="Gumbel sigma constant c_scale")
    full_search_share: float = Field(
        default=1.0, gt=0, le=1, description="share of selfplay moves searched in full and recorded (playout cap)"
    )
    fast_simulations: int = Field(default=20, ge=1, description="simulations of the unrecorded fast selfplay moves")
    tree_reuse: bool = Field(default=False, description="carry the subtree of the move played into the next search")
    selfplay_max_moves: int = Field(
        default=0,
        ge=0,
        description="selfplay games still running after this many moves are cut off and valued by the game's "
        "progress measure (or its returns so far); 0: the game's own limit",
    )
    command_timeout_s: float = Field(default=3600.0, gt=0, description="default time a user command may run (seconds)")

    @field_validator("kind")
    @classmethod
    def _kind_syntax(cls, value: str) -> str:
        return check_syntax(value)

    @field_validator("device")
    @classmethod
    def _device_syntax(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError(f"device {value!r} is not a torch device: use auto, cpu, cuda, cuda:N or mps")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> WorkloadSettings:
        if self.sprt_elo0 >= self.sprt_elo1:
            raise ValueError(f"sprt_elo0 ({self.sprt_elo0}) must be below sprt_elo1 ({self.sprt_elo1})")
        if self.kind == "command":
            if self.command_file is None:
                raise ValueError("kind is 'command' but command_file is not set: name the TOML file of your commands")
            if not self.command_file.is_file():
                raise ValueError(f"command_file {self.command_file} does not exist or is not a file")
        return self


class TuneRange(_Section):
    """The values `zeroloop tune` may try for one AlphaZero parameter: a range (`low`..`high`) or `choices`."""

    low: float | None = Field(default=None, description="smallest value tried")
    high: float | None = Field(default=None, description="largest value tried")
    log: bool = Field(default=False, description="sample and perturb the range on a log scale")
    choices: list[bool | int | float] | None = Field(default=None, description="the values tried, when not a range")

    @model_validator(mode="after")
    def _one_form(self) -> TuneRange:
        ranged = self.low is not None or self.high is not None
        if ranged == (self.choices is not None):
            raise ValueError("give either low and high, or choices")
        if self.choices is not None and not self.choices:
            raise ValueError("choices is empty")
        if ranged:
            if self.low is None or self.high is None or not self.low < self.high:
                raise ValueError(f"a range needs low below high (got {self.low} and {self.high})")
            if self.log and self.low <= 0:
                raise ValueError(f"a log range needs low above 0 (got {self.low})")
        return self


def _default_space() -> dict[str, TuneRange]:
    # What a tune varies unless told otherwise: the settings the issue names, in ranges that keep a
    # connect-four round on a CPU to minutes. Network size is tried only by variants that start fresh.
    return {
        "learning_rate": TuneRange(low=0.002, high=0.05, log=True),
        "train_steps": TuneRange(low=100, high=800, log=True),
        "simulations": TuneRange(low=32, high=240, log=True),
        "gumbel": TuneRange(choices=[False, True]),
        "full_search_share": TuneRange(low=0.25, high=1.0),
        "temperature_moves": TuneRange(low=4, high=16),
        "blocks": TuneRange(choices=[2, 3, 4]),
        "channels": TuneRange(choices=[32, 48, 64]),
    }


# Parameters a variant's weights fix: a copied model keeps its own network shape.
TUNE_SHAPE_PARAMS = ("blocks", "channels", "value_hidden")
# What a tune may vary: how a variant plays its own games and trains. Evaluation is the config's own for
# every variant, so the population's matches compare the networks, not their match settings.
TUNABLE_PARAMS = frozenset(
    {
        *TUNE_SHAPE_PARAMS,
        "simulations", "c_puct", "dirichlet_alpha", "dirichlet_epsilon", "temperature_moves", "parallel_games",
        "train_batch_size", "train_steps", "learning_rate", "momentum", "weight_decay", "gumbel",
        "gumbel_considered", "gumbel_c_visit", "gumbel_c_scale", "full_search_share", "fast_simulations",
        "tree_reuse", "selfplay_max_moves",
    }
)  # fmt: skip


class TuneSettings(_Section):
    """Population-based training of a config key's settings (`zeroloop tune`), run by the leader's `tune` daemon."""

    variants: int = Field(default=6, ge=2, le=64, description="variants in a population when none is given")
    budget_cpu_s: float = Field(
        default=3600.0, gt=0, description="CPU-seconds of the population's jobs when no budget is given"
    )
    sampler: Literal["tpe", "cmaes"] = Field(
        default="tpe", description="Optuna sampler that proposes a fresh variant's settings: tpe or cmaes"
    )
    space: dict[str, TuneRange] = Field(
        default_factory=_default_space,
        description="AlphaZero parameter -> the values a tune tries (a range or choices)",
    )
    interval_s: float = Field(default=20.0, gt=0, description="how often the tune daemon looks at the population (s)")
    ready_rounds: int = Field(
        default=2, ge=1, description="rounds a variant plays under its settings before it is compared"
    )
    exploit_fraction: float = Field(
        default=0.25, gt=0, le=0.5, description="share of ready variants, weakest first, that copy a strong one"
    )
    exploit_min_gap_elo: float = Field(
        default=30.0, ge=0, description="least rating gap (Elo) between a weak variant and the strong one it copies"
    )
    perturb_factors: tuple[float, float] = Field(
        default=(0.8, 1.25), description="explore: each range setting is multiplied by one of these, at random"
    )
    resample_probability: float = Field(
        default=0.2, ge=0, le=1, description="explore: chance that a setting is drawn afresh from its range instead"
    )
    match_games: int = Field(default=20, ge=2, description="games of each match between two variants")
    match_opponents: int = Field(
        default=2, ge=1, description="other variants a new production model plays, nearest in rating first"
    )
    drop_after_dead_jobs: int = Field(
        default=3, ge=1, description="dead jobs under one variant's settings after which it is dropped"
    )
    diverge_loss: float = Field(
        default=20.0, gt=0, description="a variant whose training loss exceeds this (or is not finite) is dropped"
    )
    replace_dropped: bool = Field(
        default=True, description="a dropped variant is replaced by a fresh one while budget is left"
    )
    distill_steps: int = Field(default=1000, ge=1, description="optimizer steps of a distillation")
    distill_value_mix: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="share of the teacher's value in a distilled network's value target (the rest: the game outcome)",
    )
    distill_games: int = Field(default=40, ge=2, description="games that rate a distilled network against its teacher")

    @field_validator("space")
    @classmethod
    def _known_parameters(cls, value: dict[str, TuneRange]) -> dict[str, TuneRange]:
        for name, spec in value.items():
            if name not in TUNABLE_PARAMS:
                raise ValueError(
                    f"{name!r} is no parameter a tune can vary; known: {', '.join(sorted(TUNABLE_PARAMS))}"
                )
            # Every value the space can give must be one the workload accepts (learning_rate > 0, ...).
            field = WorkloadSettings.model_fields[name]
            bounds: list[Any] = list(spec.choices) if spec.choices is not None else [spec.low, spec.high]
            kind: Any = Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
            for bound in bounds:
                try:
                    TypeAdapter(kind).validate_python(bound, strict=field.annotation is bool)
                except ValidationError as exc:
                    raise ValueError(f"{name}: {bound!r} is not a valid value: {exc.errors()[0]['msg']}") from None
        return value

    @field_validator("perturb_factors")
    @classmethod
    def _factors(cls, value: tuple[float, float]) -> tuple[float, float]:
        if min(value) <= 0:
            raise ValueError(f"perturbation factors must be above 0 (got {value})")
        return value


class ServerSettings(_Section):
    """`zeroloop serve` (where it listens, what it accepts) and how a worker reaches it."""

    url: str | None = Field(
        default=None,
        description="the server a worker talks to, http(s)://host:port; unset: the worker uses the store directly",
    )
    token: SecretStr | None = Field(default=None, description="this worker's token, from `zeroloop tokens create`")
    host: str = Field(default="127.0.0.1", description="address `zeroloop serve` binds; off loopback needs tokens")
    port: int = Field(default=8780, ge=1, le=65535, description="port `zeroloop serve` binds")
    max_body_bytes: int = Field(
        default=4 * 1024**2, ge=1024, description="largest JSON request body the server accepts (bytes)"
    )
    max_artifact_bytes: int = Field(
        default=16 * 1024**3, ge=1024, description="largest artifact upload the server accepts (bytes)"
    )
    tls_certfile: Path | None = Field(default=None, description="PEM certificate: serve HTTPS (with tls_keyfile)")
    tls_keyfile: Path | None = Field(default=None, description="PEM private key of tls_certfile")
    processes: int = Field(
        default=1, ge=1, le=64, description="server processes `zeroloop serve` runs on one port (about one per core)"
    )
    token_cache_s: float = Field(
        default=5.0,
        ge=0,
        description="server: how long a checked token is trusted without asking the store again (seconds); "
        "a revoked or expired token may still work this long; 0 checks the store on every request",
    )
    presigned_url_s: float = Field(
        default=0.0,
        ge=0,
        le=7 * 24 * 3600,
        description="server: with an object-store artifact location (s3://, gs://), answer a worker's download "
        "with a redirect to a URL signed for this long (seconds), so the bytes go from the store to the worker "
        "directly; 0: the server carries every download",
    )
    ca_file: Path | None = Field(
        default=None,
        description="worker: PEM certificates to trust for an https server (a private CA); unset: the system's",
    )
    credential_s: float = Field(
        default=900.0,
        ge=0,
        le=86400,
        description="server: lifetime of the node-bound credential a worker token is exchanged for (seconds), "
        "refreshed as the worker heartbeats; 0: workers present their token on every request",
    )
    negative_cache_s: float = Field(
        default=300.0,
        ge=0,
        description="server: how long a token found unusable is refused without asking the store again (seconds)",
    )
    request_threads: int = Field(
        default=32, ge=1, le=512, description="server: threads per process for requests of known workers"
    )
    unverified_requests: int = Field(
        default=4,
        ge=1,
        le=512,
        description="server: requests per process whose token is not yet known to be good that may be checked at "
        "once (each costs a store lookup); more are refused with 503 at once, without touching the store",
    )
    address_failures_per_s: float = Field(
        default=5.0,
        gt=0,
        description="server: refused requests per second one client address may make (burst: 10 times that) "
        "before it is answered 429 with no other work",
    )
    token_requests_per_s: float = Field(
        default=500.0,
        gt=0,
        description="server: requests per second one token or credential may make (burst: twice that) "
        "before it is answered 429",
    )
    forwarded_allow_ips: str | None = Field(
        default=None,
        description="server: comma-separated addresses (or *) of reverse proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto are believed (the client's address; https makes the login cookie Secure); "
        "unset: none",
    )
    tls_client_ca: Path | None = Field(
        default=None,
        description="server: PEM of the CA whose client certificates are required (mutual TLS); unset: none asked",
    )
    tls_client_certfile: Path | None = Field(
        default=None, description="worker: PEM client certificate to present to a server that asks for one"
    )
    tls_client_keyfile: Path | None = Field(default=None, description="worker: PEM private key of tls_client_certfile")
    request_timeout_s: float = Field(default=60.0, gt=0, description="worker: time one request may take (seconds)")
    retry_initial_s: float = Field(default=0.5, ge=0, description="worker: first retry delay after a transport error")
    retry_max_s: float = Field(default=10.0, ge=0, description="worker: largest retry delay (seconds)")
    retry_attempts: int = Field(default=8, ge=1, description="worker: tries of one request before giving up")

    @field_validator("url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("give an http:// or https:// URL")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerSettings:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("set both tls_certfile and tls_keyfile, or neither")
        if (self.tls_client_certfile is None) != (self.tls_client_keyfile is None):
            raise ValueError("set both tls_client_certfile and tls_client_keyfile, or neither")
        if self.tls_client_ca is not None and self.tls_certfile is None:
            raise ValueError("tls_client_ca asks workers for certificates over TLS: set tls_certfile and tls_keyfile")
        return self


class TracingSettings(_Section):
    """OpenTelemetry tracing: where the spans of this process go (none: only the API's no-op runs)."""

    exporter: Literal["none", "console", "otlp", "file"] = Field(
        default="none",
        description="none, console (one JSON line per span on stderr), otlp (OTLP over HTTP to `endpoint`; "
        "needs zeroloop[otlp]) or file (one JSON line per span appended to `file`)",
    )
    endpoint: str = Field(
        default="http://localhost:4318/v1/traces", description="the OTLP/HTTP traces endpoint (exporter = otlp)"
    )
    file: Path | None = Field(
        default=None, description="the JSON-lines file of exporter = file; unset: traces.jsonl in the data directory"
    )
    service_name: str = Field(default="zeroloop", min_length=1, description="the service.name of every span")

    @field_validator("endpoint")
    @classmethod
    def _http_endpoint(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("give an http:// or https:// URL")
        return value

    @field_validator("file")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return value.expanduser().absolute() if value is not None else None


class LogSettings(_Section):
    """How log records are written: a terminal shows rich lines; files and pipes get plain or JSON lines."""

    format: Literal["plain", "json"] = Field(
        default="plain",
        description="plain lines, or one JSON object a line (time, level, logger, message, trace_id, span_id); "
        "a terminal shows rich lines unless json",
    )
    file: Path | None = Field(
        default=None, description="write log records to this file, rotated by size, instead of to stderr"
    )
    max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, description="rotate the log file at this size (bytes)")
    backups: int = Field(default=5, ge=0, le=100, description="rotated log files kept (count)")

    @field_validator("file")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return value.expanduser().absolute() if value is not None else None


class RetentionSettings(_Section):
    """What garbage collection deletes, and when (`zeroloop gc`, and the maintenance daemon on the leader)."""

    finished_jobs_days: float = Field(
        default=14.0, gt=0, description="completed, dead and cancelled jobs older than this are deleted (days)"
    )
    game_batches_days: float = Field(
        default=7.0,
        gt=0,
        description="game batches older than this, outside every config's newest training window and not "
        "in a kept model's lineage, are deleted (days)",
    )
    rejected_models_days: float = Field(
        default=7.0, gt=0, description="rejected models (and their artifacts) older than this are deleted (days)"
    )
    match_results_days: float = Field(
        default=30.0,
        gt=0,
        description="match result files older than this are deleted, and the matches (with their rating history) "
        "of deleted models once this old; a kept model's matches stay, they are its rating (days)",
    )
    multipart_grace_s: float = Field(
        default=86400.0,
        gt=0,
        description="an incomplete S3 multipart upload older than this is aborted by garbage collection, as a "
        "bucket lifecycle rule would (seconds)",
    )
    interval_s: float = Field(
        default=3600.0, ge=0, description="the maintenance daemon collects garbage this often (seconds); 0: never"
    )


class MaintenanceSettings(_Section):
    """The maintenance daemons: disk space on every node, store upkeep on the leader."""

    disk_interval_s: float = Field(default=60.0, gt=0, description="disk space check interval, every node (seconds)")
    store_interval_s: float = Field(
        default=3600.0, ge=0, description="PRAGMA optimize (SQLite) or ANALYZE (PostgreSQL) every (seconds); 0: never"
    )
    vacuum_interval_s: float = Field(
        default=7 * 86400.0, ge=0, description="SQLite VACUUM interval (seconds); 0: never"
    )
    consolidate_interval_s: float = Field(
        default=3600.0, ge=0, description="small game batches are merged into shards this often (seconds); 0: never"
    )
    consolidate_after_s: float = Field(
        default=3600.0, ge=0, description="game batches younger than this are not merged yet (seconds)"
    )
    shard_target_bytes: int = Field(
        default=64 * 1024**2, ge=1024, description="largest merged shard (bytes); batches under a quarter of it merge"
    )


class DashboardSettings(_Section):
    """The history the dashboard charts: the readings the leader takes of queue, nodes, cost and pipeline totals."""

    readings_interval_s: float = Field(
        default=60.0,
        gt=0,
        description="the leader reads queue depth and waits, nodes by state, cost and each pipeline's totals this "
        "often, for the dashboard's charts over time (seconds)",
    )
    readings_full_days: float = Field(
        default=14.0,
        gt=0,
        description="readings younger than this are all kept; older ones are thinned to one an hour, so a "
        "long run's curves stay (days)",
    )


class BackupSettings(_Section):
    """Backups of the store and the artifact manifest (`zeroloop backup`, and the backup daemon on the leader)."""

    url: str | None = Field(
        default=None, description="any fsspec URL (file://, s3://, ...) backups go to; unset means <data_dir>/backups"
    )
    interval_s: float = Field(
        default=86400.0, ge=0, description="the backup daemon takes a backup this often (seconds); 0: never"
    )
    keep: int = Field(default=7, ge=1, description="backups kept; older ones are deleted after a new one is made")
    continuous_interval_s: float = Field(
        default=300.0,
        ge=0,
        description="the backup daemon also snapshots the store this often (seconds), so a lost store costs at most "
        "this much work (its recovery point objective); 0: off (a PostgreSQL store with WAL archiving needs none)",
    )
    continuous_keep: int = Field(
        default=6, ge=1, description="continuous snapshots kept; older ones are deleted after a new one is made"
    )
    pg_bin_dir: Path | None = Field(
        default=None, description="where pg_dump and pg_restore are; unset: the PATH, then /usr/lib/postgresql/*/bin"
    )


class Settings(BaseSettings):
    """Every setting of zeroloop, validated at start."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    data_dir: Path = Field(
        default_factory=lambda: Path.home() / ".zeroloop", description="where local state, logs and caches live"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    logs: LogSettings = Field(default_factory=LogSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    artifacts: ArtifactSettings = Field(default_factory=ArtifactSettings)
    events: EventSettings = Field(default_factory=EventSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    daemons: DaemonSettings = Field(default_factory=DaemonSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    idle: IdleSettings = Field(default_factory=IdleSettings)
    providers: dict[str, PoolSettings] = Field(
        default_factory=dict, description="pool name -> the machines one provider launches for the fleet"
    )
    autoscaler: AutoscalerSettings = Field(default_factory=AutoscalerSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    workload: WorkloadSettings = Field(default_factory=WorkloadSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    maintenance: MaintenanceSettings = Field(default_factory=MaintenanceSettings)
    backup: BackupSettings = Field(default_factory=BackupSettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    tune: TuneSettings = Field(default_factory=TuneSettings)

    def __init__(self, **values: Any) -> None:
        """Read and validate every source; a bad value or an unreadable source is a ConfigError."""
        nested = _NESTED.set(True)
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from exc
        except ValueError as exc:  # TOML syntax errors and env values that are not JSON
            raise ConfigError(f"cannot read settings: {_first_line(str(exc))}") from exc
        finally:
            _NESTED.reset(nested)

    @field_validator("providers")
    @classmethod
    def _pool_names(cls, value: dict[str, PoolSettings]) -> dict[str, PoolSettings]:
        for name in value:
            if not _POOL_NAME.match(name):
                raise ValueError(
                    f"pool name {name!r} is not a plain name: use letters, digits, '_' and '-' (at most 63), "
                    "starting with a letter; it names files and machines"
                )
        return value

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get(CONFIG_FILE_ENV, DEFAULT_CONFIG_FILE))
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_path))

    @property
    def store_url(self) -> str:
        """The effective store URL, with the embedded default filled in."""
        if self.store.url is not None:
            return self.store.url.get_secret_value()
        return f"sqlite:///{self.data_dir / 'zeroloop.db'}"

    @property
    def artifacts_url(self) -> str:
        """The effective artifact location, with the embedded default filled in."""
        return self.artifacts.url or (self.data_dir / "artifacts").as_uri()

    @property
    def disk_paths(self) -> tuple[Path, ...]:
        """The local directories zeroloop fills on this machine: the data directory, and the artifact location when
        it is a local path (a separate mount fills on its own, and backpressure watches the fullest)."""
        paths = [self.data_dir]
        url = self.artifacts_url
        if url.startswith("file://"):
            paths.append(Path(url2pathname(urlsplit(url).path)))
        elif "://" not in url:
            paths.append(Path(url).expanduser().absolute())
        return tuple(dict.fromkeys(paths))

    @property
    def backups_url(self) -> str:
        """The effective backup location, with the embedded default filled in."""
        return self.backup.url or (self.data_dir / "backups").as_uri()

    def redacted(self) -> dict[str, Any]:
        """The effective settings as plain data, with every secret replaced by `***`."""
        data = self.model_dump(mode="json")
        data["store"]["url"] = redact(self.store_url)
        data["artifacts"]["url"] = redact(self.artifacts_url)
        data["backup"]["url"] = redact(self.backups_url)
        data["artifacts"]["storage_options"] = redact_options(self.artifacts.storage_options)
        return data


def env_name(loc: tuple[str | int, ...]) -> str:
    """The environment variable that sets the setting at `loc`."""
    return ENV_PREFIX + "__".join(str(part) for part in loc).upper()


def known_env_names() -> tuple[frozenset[str], tuple[str, ...]]:
    """The environment variables the settings read: exact names, and prefixes of dict settings' keys."""
    exact: set[str] = set()
    prefixes: list[str] = []
    for name, field in Settings.model_fields.items():
        top = env_name((name,))
        exact.add(top)
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            for inner, inner_field in section.model_fields.items():
                full = env_name((name, inner))
                exact.add(full)
                if str(inner_field.annotation).startswith("dict"):
                    prefixes.append(full + "__")
    return frozenset(exact), tuple(prefixes)


def check_environment(environ: Mapping[str, str]) -> None:
    """Refuse `ZEROLOOP_*` variables that name no setting (typos), suggesting the closest real one."""
    exact, prefixes = known_env_names()
    problems = []
    for raw in sorted(environ):
        name = raw.upper()
        if not name.startswith(ENV_PREFIX) or name in exact or name in ALLOWED_ENV or name.startswith(prefixes):
            continue
        # Matched without the shared prefix, which would make every name look alike.
        tails = sorted(known[len(ENV_PREFIX) :] for known in exact | ALLOWED_ENV)
        close = difflib.get_close_matches(name[len(ENV_PREFIX) :], tails, n=1, cutoff=0.6)
        hint = (
            f"did you mean {ENV_PREFIX}{close[0]}?"
            if close
            else "zeroloop has no such setting (see `zeroloop config`)."
        )
        shown = raw if raw.isprintable() else repr(raw)
        problems.append(f"unknown environment variable {shown}: {hint} Rename or unset it")
    if problems:
        raise ConfigError("; ".join(problems))


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings; raise ConfigError naming each bad setting or unknown variable."""
    check_environment(os.environ)
    toml_path = Path(os.environ.get(CONFIG_FILE_ENV, DEFAULT_CONFIG_FILE))
    if CONFIG_FILE_ENV in os.environ and not toml_path.is_file():
        raise ConfigError(f"{CONFIG_FILE_ENV}={toml_path} does not exist or is not a file")
    try:
        return Settings(**overrides)
    except OSError as exc:  # the settings file is unreadable (permissions, a directory, ...)
        raise ConfigError(f"cannot read the settings file {toml_path}: {exc.strerror or exc}") from None


def _section_of(model: type[BaseModel]) -> tuple[str, ...]:
    """Where a section model sits in Settings (e.g. ('queue',)); () if it is not a section."""
    for name, field in Settings.model_fields.items():
        if field.annotation is model:
            return (name,)
    return ()


def _describe(exc: ValidationError, prefix: tuple[str, ...] = (), section: type[BaseModel] | None = None) -> str:
    problems = []
    for error in exc.errors():
        loc = prefix + tuple(error["loc"])
        given = error.get("input")
        secret = tuple(part for part in loc if isinstance(part, str)) in _SECRET_SETTINGS
        shown = "" if isinstance(given, dict) or secret else f" (got {redact(repr(given))})"
        if not loc:  # a check across a section's fields, of a section built on its own
            problems.append(f"invalid {section.__name__ if section else 'settings'}: {error['msg']}")
            continue
        dotted = ".".join(str(part) for part in loc)
        problems.append(f"invalid setting {dotted} [{env_name(loc)}]{shown}: {error['msg']}")
    return "; ".join(problems)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unreadable value"
