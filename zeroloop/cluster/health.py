"""The system health score, its levels, and the rule that pauses and resumes the pipeline.

The score is a weighted mean of four components in [0, 1] (see docs/health.md):

    availability A = available nodes / live nodes not starting      (1 with none)
    circuits     C = 1 - (open + half_open / 2) / breakers           (1 with no breakers)
    errors       E = completed / (completed + failed + dead jobs)    (1 with no jobs in the window)
    recovery     R = min(1, circuits closed / circuits opened)        (1 with none opened in the window)
    score = 0.35 A + 0.25 C + 0.25 E + 0.15 R

A node is available when it is active and its last heartbeat is younger than the
node-lost timeout (a node nobody marked lost, because no leader runs, still counts as
gone); a node launched and not registered yet is starting, neither up nor down, and
ended nodes (terminated, failed) do not count. The score is capped at 0.5 (UNHEALTHY)
while any of these holds, because then the loop is not running whatever the components
say: a critical daemon is FAILED; no process holds the leader lease; work is queued and
no node is available to run it or starting; every daemon record has gone stale (no
zeroloop process has reported recently).

Levels: HEALTHY >= 0.8 > DEGRADED >= 0.6 > UNHEALTHY >= 0.4 > CRITICAL, and STARTING in
place of HEALTHY while no node is up yet and some are starting (the first minutes of a
quickstart or a fleet: nothing failed). The pause rule
has hysteresis: pause when the score falls below `pause_below_score`, resume only when
it rises above `resume_above_score`. Everything here is a pure function of
`HealthInputs` except `HealthMonitor`, which gathers the inputs from the store.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from zeroloop.cluster.breakers import BreakerState, CircuitBreakers
from zeroloop.cluster.leases import LEADER
from zeroloop.cluster.nodes import STARTING, NodeStatus
from zeroloop.config import ClusterSettings, HealthSettings
from zeroloop.daemons.daemon import Clock, DaemonContext, DaemonState, LoopDaemon
from zeroloop.ports import AppParts
from zeroloop.store.database import Store
from zeroloop.store.queries import breakers as breaker_queries
from zeroloop.store.queries import daemons as daemon_queries
from zeroloop.store.queries import health as queries
from zeroloop.store.queries import leases as lease_queries
from zeroloop.store.queries import nodes as node_queries

WEIGHTS = {"availability": 0.35, "circuits": 0.25, "errors": 0.25, "recovery": 0.15}
CRITICAL_DAEMON_CAP = 0.5  # also the cap for no leader, no node for queued work, and only stale daemons
# The daemon manager rewrites every record each health interval while its process lives; only
# a stopped or failed daemon's record may rest unchanged.
_REPORTING = frozenset(DaemonState) - {DaemonState.STOPPED, DaemonState.FAILED}
_ENDED = frozenset({NodeStatus.TERMINATED.value, NodeStatus.FAILED.value})  # gone: neither up nor down
_STARTING = frozenset(status.value for status in STARTING)


class HealthLevel(StrEnum):
    """How healthy the system is, from its score."""

    STARTING = "starting"  # nothing wrong; no node is up yet and some are starting (launched, not registered)
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    CRITICAL = "critical"


@dataclass(frozen=True)
class HealthInputs:
    """What the score is computed from (counts; the job and circuit counts cover the error window)."""

    nodes_total: int = 0
    nodes_available: int = 0
    nodes_starting: int = 0  # launched and not registered yet, within their launch timeout: not unavailable
    breakers_total: int = 0
    breakers_open: int = 0
    breakers_half_open: int = 0
    jobs_completed: int = 0
    jobs_failed: int = 0
    circuits_opened: int = 0
    circuits_closed: int = 0
    critical_daemons_failed: list[str] = field(default_factory=list)
    leader_present: bool = True
    jobs_waiting: int = 0
    daemons_total: int = 0
    daemons_stale: list[str] = field(default_factory=list)

    @property
    def stranded(self) -> bool:
        """Work is queued, no node is available to run it and none is starting."""
        return self.jobs_waiting > 0 and self.nodes_available == 0 and self.nodes_starting == 0

    @property
    def all_daemons_stale(self) -> bool:
        """Daemons were recorded and none of them has reported recently."""
        return self.daemons_total > 0 and len(self.daemons_stale) == self.daemons_total


def components(inputs: HealthInputs) -> dict[str, float]:
    """The four components in [0, 1]."""
    judged = inputs.nodes_total - inputs.nodes_starting  # a node still starting is neither up nor down
    availability = inputs.nodes_available / judged if judged > 0 else 1.0
    circuits = (
        1.0 - (inputs.breakers_open + 0.5 * inputs.breakers_half_open) / inputs.breakers_total
        if inputs.breakers_total
        else 1.0
    )
    finished = inputs.jobs_completed + inputs.jobs_failed
    errors = inputs.jobs_completed / finished if finished else 1.0
    recovery = min(1.0, inputs.circuits_closed / inputs.circuits_opened) if inputs.circuits_opened else 1.0
    return {"availability": availability, "circuits": circuits, "errors": errors, "recovery": recovery}


def health_score(inputs: HealthInputs) -> float:
    """The system health score in [0, 1]."""
    parts = components(inputs)
    score = sum(WEIGHTS[name] * value for name, value in parts.items())
    if inputs.critical_daemons_failed or not inputs.leader_present or inputs.stranded or inputs.all_daemons_stale:
        score = min(score, CRITICAL_DAEMON_CAP)
    return round(max(0.0, min(1.0, score)), 4)


def health_level(score: float) -> HealthLevel:
    """The level of a score."""
    if score >= 0.8:
        return HealthLevel.HEALTHY
    if score >= 0.6:
        return HealthLevel.DEGRADED
    if score >= 0.4:
        return HealthLevel.UNHEALTHY
    return HealthLevel.CRITICAL


def should_pause_pipeline(score: float, paused: bool, settings: HealthSettings) -> bool:
    """Whether the pipeline should be paused after seeing `score`, given whether it is paused now."""
    if paused:
        return score <= settings.resume_above_score
    return score < settings.pause_below_score


def issues(inputs: HealthInputs) -> list[str]:
    """Human-readable reasons the score is below 1."""
    found = []
    judged = inputs.nodes_total - inputs.nodes_starting
    if judged > 0 and inputs.nodes_available < judged:
        found.append(f"nodes: {judged - inputs.nodes_available} of {judged} unavailable")
    if inputs.nodes_starting:
        found.append(f"nodes: {inputs.nodes_starting} starting (launched, not registered yet)")
    if inputs.breakers_open:
        found.append(f"circuits: {inputs.breakers_open} open")
    if inputs.breakers_half_open:
        found.append(f"circuits: {inputs.breakers_half_open} half-open (testing recovery)")
    if inputs.jobs_failed:
        found.append(f"jobs: {inputs.jobs_failed} failed recently, {inputs.jobs_completed} completed")
    if inputs.circuits_opened > inputs.circuits_closed:
        found.append(
            f"recovery: {inputs.circuits_opened - inputs.circuits_closed} circuit(s) opened and not yet closed"
        )
    found.extend(f"daemon {name}: critical daemon FAILED" for name in inputs.critical_daemons_failed)
    if not inputs.leader_present:
        found.append("leader: no process holds the leader lease; start `zeroloop coordinator` (or `zeroloop run`)")
    if inputs.stranded:
        found.append(f"nodes: {inputs.jobs_waiting} job(s) queued and no live node to run them; start a worker")
    if inputs.all_daemons_stale:
        found.append(f"daemons: none of {inputs.daemons_total} has reported recently; is any zeroloop process running?")
    elif inputs.daemons_stale:
        shown = ", ".join(inputs.daemons_stale[:5]) + (" ..." if len(inputs.daemons_stale) > 5 else "")
        found.append(f"daemons: {len(inputs.daemons_stale)} stopped reporting without stopping ({shown})")
    return found


@dataclass(frozen=True)
class HealthReport:
    """One assessment: score, level, components, issues, and the pause decision."""

    score: float
    level: HealthLevel
    components: dict[str, float]
    issues: list[str]
    paused: bool
    inputs: HealthInputs

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON and the daemons table."""
        data = asdict(self)
        data["level"] = self.level.value
        return data


class HealthMonitor:
    """Gathers `HealthInputs` from the store and keeps the pipeline pause state (with hysteresis)."""

    def __init__(
        self,
        store: Store,
        settings: HealthSettings,
        *,
        daemon_fresh_s: float,
        node_lost_after_s: float | None = None,
        clock: Clock = time.time,
    ) -> None:
        """`daemon_fresh_s`: how old a daemon record may be and still count (seconds); `node_lost_after_s`:
        how old a node's last heartbeat may be (seconds; default: the cluster setting's default)."""
        self.store = store
        self.settings = settings
        self.daemon_fresh_s = daemon_fresh_s
        default_lost: float = ClusterSettings.model_fields["node_lost_after_s"].default
        self.node_lost_after_s = default_lost if node_lost_after_s is None else node_lost_after_s
        self.clock = clock
        self.paused = False

    def inputs(self) -> HealthInputs:
        """Read the inputs now: nodes, breakers, events of the error window, daemons, the leader, waiting work."""
        now = self.clock()
        with self.store.read() as conn:
            leader = lease_queries.get_lease(conn, LEADER)
            waiting = queries.runnable_job_count(conn, now)
            nodes = node_queries.list_nodes(conn)
            breakers = breaker_queries.list_breakers(conn)
            counts = queries.count_events(
                conn,
                ("JOB_COMPLETED", "JOB_FAILED", "JOB_DEAD", "CIRCUIT_OPENED", "CIRCUIT_CLOSED"),
                now - self.settings.error_window_s,
            )
            daemons = daemon_queries.list_daemons(conn)
        live = [n for n in nodes if n["status"] not in _ENDED]
        heard_after = now - self.node_lost_after_s
        fresh_after = now - self.daemon_fresh_s
        reporting = [d for d in daemons if d["state"] in _REPORTING]
        return HealthInputs(
            nodes_total=len(live),
            nodes_available=sum(
                1 for n in live if n["status"] == NodeStatus.ACTIVE.value and (n["heartbeat_at"] or 0) >= heard_after
            ),
            nodes_starting=sum(1 for n in live if n["status"] in _STARTING),
            breakers_total=len(breakers),
            breakers_open=sum(1 for b in breakers if b["state"] == BreakerState.OPEN.value),
            breakers_half_open=sum(1 for b in breakers if b["state"] == BreakerState.HALF_OPEN.value),
            jobs_completed=counts["JOB_COMPLETED"],
            jobs_failed=counts["JOB_FAILED"] + counts["JOB_DEAD"],
            circuits_opened=counts["CIRCUIT_OPENED"],
            circuits_closed=counts["CIRCUIT_CLOSED"],
            critical_daemons_failed=sorted(
                f"{d['node']}/{d['name']}"
                for d in daemons
                if d["state"] == DaemonState.FAILED.value
                and d["health"].get("critical")
                and d["updated_at"] >= now - self.daemon_fresh_s
            ),
            leader_present=leader is not None and leader["holder"] is not None and leader["expires_at"] > now,
            jobs_waiting=waiting,
            daemons_total=len(reporting),
            daemons_stale=sorted(f"{d['node']}/{d['name']}" for d in reporting if d["updated_at"] < fresh_after),
        )

    def assess(self, inputs: HealthInputs | None = None) -> HealthReport:
        """Score the system now (or `inputs`) without changing the pause state."""
        inputs = inputs or self.inputs()
        score = health_score(inputs)
        level = health_level(score)
        if level is HealthLevel.HEALTHY and inputs.nodes_starting and not inputs.nodes_available:
            level = HealthLevel.STARTING  # the first minutes: workers are on their way, nothing failed
        return HealthReport(score, level, components(inputs), issues(inputs), self.paused, inputs)

    def should_pause_pipeline(self, inputs: HealthInputs | None = None) -> bool:
        """Apply the pause rule to a fresh assessment, remember the outcome, and return it."""
        report = self.assess(inputs)
        self.paused = should_pause_pipeline(report.score, self.paused, self.settings)
        return self.paused


class HealthMonitorDaemon(LoopDaemon):
    """Moves open circuits past their recovery time to half-open, then scores health and applies the pause rule."""

    def __init__(self, monitor: HealthMonitor, breakers: CircuitBreakers, interval_s: float, *, clock: Clock) -> None:
        super().__init__(interval_s, clock=clock)
        self.monitor = monitor
        self.breakers = breakers
        self.report: HealthReport | None = None

    async def tick(self) -> None:
        """One assessment."""
        await asyncio.to_thread(self.breakers.refresh_all)
        await asyncio.to_thread(self.monitor.should_pause_pipeline)
        self.report = await asyncio.to_thread(self.monitor.assess)

    def details(self) -> dict[str, Any]:
        """The last score, level, issues and pause state."""
        if self.report is None:
            return {}
        return {
            "score": self.report.score,
            "level": self.report.level.value,
            "issues": self.report.issues,
            "paused": self.report.paused,
        }


def health_monitor_daemon(context: DaemonContext[AppParts]) -> HealthMonitorDaemon:
    """Factory of the `health_monitor` daemon."""
    app = context.parts
    return HealthMonitorDaemon(app.health, app.breakers, app.settings.daemons.health_interval_s, clock=context.clock)
