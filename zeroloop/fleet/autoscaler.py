"""The autoscaler: how many machines each pool should have, decided from the queue, then launched.

`plan` is pure. For every pool it counts the runnable queued jobs that the pool's
profile runs and its machines can hold (GPUs, memory, labels), each job given to the
cheapest pool able to run it. Free slots on the pool's live nodes and slots still
starting absorb that work first (idle capacity fills before a machine is rented); what
is left, divided by the slots per machine, is the shortfall. The launch is that
shortfall, or what brings the pool up to `min_nodes` (lost machines replaced), capped
by `max_nodes`, `autoscaler.max_launches_per_tick`, the budget per hour, the launch
cooldown (skipped while the pool's work is under HIGH backpressure or worse), the backoff
after failed launches and the pool's open circuit breaker. Work a pool cannot take (at
`max_nodes`, its circuit open, backing off, over the budget) spills to the next cheapest
pool able to run it, and both pools' decisions say so (`spilled_from`, `spilled_to`).
A launch held back by the budget publishes FLEET_BUDGET_REACHED with the decision.
Scaling down is idle shutdown's work. Every plan is recorded with its evidence as a
decision of scope `fleet:<pool>`, shown by `zeroloop status` and `pipeline decisions`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from zeroloop.cluster.leases import leader_fence
from zeroloop.cluster.nodes import LIVE, STARTING, Fence, NodeStatus
from zeroloop.config import AutoscalerSettings, PoolSettings
from zeroloop.daemons.daemon import Clock, DaemonContext, LoopDaemon
from zeroloop.events.wiring import declare
from zeroloop.fleet.manager import Fleet, FleetError, LaunchOutcome
from zeroloop.pipeline import jobs
from zeroloop.ports import AppParts
from zeroloop.queue.backpressure import BackpressureLevel
from zeroloop.store.queries import fleet as fleet_queries
from zeroloop.store.queries import jobs as job_queries
from zeroloop.store.queries import nodes as node_queries
from zeroloop.store.queries import pipelines as decision_queries

log = logging.getLogger(__name__)
declare("zeroloop.fleet.autoscaler", emits=("FLEET_BUDGET_REACHED",))

DURATION_WINDOW_S = 6 * 3600.0  # job durations are estimated from the last six hours
_PRESSED = frozenset(level.name for level in BackpressureLevel if level >= BackpressureLevel.HIGH)


@dataclass(frozen=True)
class PoolView:
    """One pool as the planner sees it (times: epoch seconds; cost: currency units/hour)."""

    name: str
    settings: PoolSettings
    job_types: frozenset[str] | None  # None: every type
    live: int = 0  # active, draining or drained
    active: int = 0
    starting: int = 0  # requested or launching
    free_slots: int = 0  # on active nodes
    lost: int = 0
    last_launch_at: float | None = None
    retry_after: float | None = None  # no launch before this, after failures
    breaker_open: bool = False

    def runs(self, demand: Mapping[str, Any]) -> bool:
        """Whether a machine of this pool can run jobs of this demand row."""
        pool = self.settings
        if self.job_types is not None and demand["type"] not in self.job_types:
            return False
        if int(demand["need_gpus"] or 0) > pool.gpus:
            return False
        memory = int(pool.memory_gb * 2**30)
        if memory and int(demand["need_memory_bytes"] or 0) > memory:
            return False
        return set(demand["need_labels"] or ()) <= set(pool.labels)


@dataclass(frozen=True)
class ScalePlan:
    """The decision for one pool: how many machines to launch, why, and the evidence."""

    pool: str
    launch: int
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class Assignment:
    """Where the queued jobs go (job counts by pool), and the work each pool took over from a cheaper one."""

    jobs: dict[str, int]
    spilled_from: dict[str, dict[str, int]] = field(default_factory=dict)  # pool -> cheaper pool -> jobs
    spilled_to: dict[str, dict[str, int]] = field(default_factory=dict)  # pool -> dearer pool -> jobs
    blocked: dict[str, str] = field(default_factory=dict)  # pool -> why it could not take more

    def spill(self, cheapest: str, taker: str, count: int, why: str) -> None:
        """Record that `count` jobs for `cheapest` went to `taker`, because `why`."""
        into = self.spilled_from.setdefault(taker, {})
        into[cheapest] = into.get(cheapest, 0) + count
        out = self.spilled_to.setdefault(cheapest, {})
        out[taker] = out.get(taker, 0) + count
        self.blocked.setdefault(cheapest, why)


class _Room:
    """What one pool can still absorb this tick: slots free or starting, then machines it may still launch."""

    def __init__(self, pool: PoolView, now: float, settings: AutoscalerSettings) -> None:
        self.pool = pool
        self.slots = pool.settings.slots
        self.free = pool.free_slots + pool.starting * self.slots  # jobs absorbed without a launch
        self.partial = 0  # slots left on machines planned this tick
        self.headroom = max(0, pool.settings.max_nodes - pool.live - pool.starting)
        self.price = pool.settings.price_per_hour or 0.0
        self.why_not = ""
        if pool.breaker_open:
            self.headroom, self.why_not = 0, "its circuit is open"
        elif pool.retry_after is not None and now < pool.retry_after:
            self.headroom, self.why_not = 0, "it backs off after a failed launch"
        elif self.headroom == 0:
            self.why_not = f"it is at max_nodes {pool.settings.max_nodes}"

    def take(self, count: int, budget: list[float]) -> int:
        """Absorb up to `count` jobs, planning machines within the headroom and `budget[0]` (per hour)."""
        taken = min(count, self.free)
        self.free -= taken
        while taken < count:
            if self.partial == 0:
                if self.headroom == 0:
                    self.why_not = self.why_not or f"it is at max_nodes {self.pool.settings.max_nodes}"
                    break
                if self.price > 0 and budget[0] < self.price:
                    self.why_not = "the budget is reached"
                    break
                self.headroom -= 1
                budget[0] -= self.price
                self.partial = self.slots
            step = min(count - taken, self.partial)
            self.partial -= step
            taken += step
        return taken


def _by_price(pools: Sequence[PoolView]) -> list[PoolView]:
    return sorted(pools, key=lambda p: (p.settings.price_per_hour or 0.0, p.name))


def assign(
    pools: Sequence[PoolView],
    demand: Iterable[Mapping[str, Any]],
    *,
    now: float = 0.0,
    settings: AutoscalerSettings | None = None,
    fleet_cost_per_hour: float = 0.0,
) -> Assignment:
    """Give each queued job to the cheapest pool able to run it that has room, spilling the rest onward.

    A pool has room while it has free or starting slots, or may still launch: below
    `max_nodes`, its circuit closed, not backing off, and within the budget (shared by the
    pools, cheapest first). Demand that no able pool has room for waits at the cheapest
    one (unrunnable demand, needing what no pool has, goes nowhere). Ray's autoscaler
    carries unmet demand across node types the same way.
    """
    settings = settings or AutoscalerSettings()
    ordered = _by_price(pools)
    rooms = {pool.name: _Room(pool, now, settings) for pool in ordered}
    budget = [math.inf if settings.budget_per_hour is None else settings.budget_per_hour - fleet_cost_per_hour]
    found = Assignment({pool.name: 0 for pool in pools})
    for row in demand:
        able = [pool for pool in ordered if pool.runs(row)]
        if not able:
            continue
        left = int(row["count"])
        cheapest = able[0].name
        for pool in able:
            taken = rooms[pool.name].take(left, budget)
            if taken:
                found.jobs[pool.name] += taken
                left -= taken
                if pool.name != cheapest:
                    found.spill(cheapest, pool.name, taken, rooms[cheapest].why_not)
            if not left:
                break
        found.jobs[cheapest] += left  # no room anywhere: it waits where it is cheapest
    return found


def plan(
    pools: Sequence[PoolView],
    demand: Iterable[Mapping[str, Any]],
    *,
    now: float,
    settings: AutoscalerSettings,
    fleet_cost_per_hour: float,
    durations: Mapping[str, float] | None = None,
    pressure: Mapping[str, str] | None = None,
) -> list[ScalePlan]:
    """The launches of this tick, one plan per pool in the order given (pure).

    `pressure` is the backpressure level per job type (HIGH or worse: producers are being
    held back because work piles up); a pool whose work is under such pressure launches
    without waiting out the cooldown. Work a pool cannot take (max_nodes, open circuit,
    backoff, budget) spills to the next able pool, recorded in both plans' evidence.
    """
    rows = list(demand)
    assigned = assign(pools, rows, now=now, settings=settings, fleet_cost_per_hour=fleet_cost_per_hour)
    budget_left = math.inf if settings.budget_per_hour is None else settings.budget_per_hour - fleet_cost_per_hour
    plans: dict[str, ScalePlan] = {}
    for pool in _by_price(pools):  # the budget goes to the cheapest pools first, as in `assign`
        cfg = pool.settings
        waiting = assigned.jobs[pool.name]
        slots = cfg.slots
        shortfall_jobs = waiting - pool.free_slots - pool.starting * slots
        want = max(0, math.ceil(shortfall_jobs / slots)) if shortfall_jobs > 0 else 0
        present = pool.live + pool.starting
        below_min = max(0, cfg.min_nodes - present)
        launch = max(want, below_min)
        evidence: dict[str, Any] = {
            "queued_jobs": waiting,
            "free_slots": pool.free_slots,
            "starting": pool.starting,
            "live": pool.live,
            "lost": pool.lost,
            "min_nodes": cfg.min_nodes,
            "max_nodes": cfg.max_nodes,
        }
        if pool.name in assigned.spilled_from:
            evidence["spilled_from"] = assigned.spilled_from[pool.name]
        if pool.name in assigned.spilled_to:
            evidence["spilled_to"] = assigned.spilled_to[pool.name]
            evidence["spilled_because"] = assigned.blocked[pool.name]
        if durations:
            work_s = sum(durations.get(str(r["type"]), 0.0) * int(r["count"]) for r in rows if pool.runs(r))
            evidence["queued_work_s"] = round(work_s, 1)
        pressed = sorted(
            {str(r["type"]) for r in rows if pool.runs(r) and (pressure or {}).get(str(r["type"])) in _PRESSED}
        )
        if pressed:
            evidence["backpressure"] = {job_type: (pressure or {})[job_type] for job_type in pressed}
        reason = f"{below_min} below min_nodes" if below_min >= want and below_min else f"{waiting} job(s) waiting"
        plans[pool.name] = scale = _limit(pool, launch, reason, evidence, now, settings, budget_left, bool(pressed))
        budget_left -= scale.launch * (cfg.price_per_hour or 0.0)
    return [plans[pool.name] for pool in pools]


def _limit(
    pool: PoolView,
    launch: int,
    reason: str,
    evidence: dict[str, Any],
    now: float,
    settings: AutoscalerSettings,
    budget_left: float,
    pressed: bool,
) -> ScalePlan:
    """`launch` capped by max_nodes, the launches per tick, the circuit, the backoff, the cooldown and the budget."""
    cfg = pool.settings
    if launch == 0:
        return ScalePlan(pool.name, 0, "enough capacity", evidence)
    present = pool.live + pool.starting
    below_min = cfg.min_nodes > present
    capped = min(launch, cfg.max_nodes - present, settings.max_launches_per_tick)
    if capped <= 0:
        return ScalePlan(pool.name, 0, f"at max_nodes {cfg.max_nodes} ({reason})", evidence)
    if pool.breaker_open:
        return ScalePlan(pool.name, 0, f"circuit open after failed launches ({reason})", evidence)
    if pool.retry_after is not None and now < pool.retry_after:
        return ScalePlan(
            pool.name, 0, f"backing off after a failed launch for {pool.retry_after - now:.0f} s", evidence
        )
    since_launch = math.inf if pool.last_launch_at is None else now - pool.last_launch_at
    if since_launch < settings.launch_cooldown_s and not below_min and not pressed:
        return ScalePlan(pool.name, 0, f"cooldown: launched {since_launch:.0f} s ago", evidence)
    price = cfg.price_per_hour or 0.0
    if price > 0 and budget_left < math.inf:
        affordable = int(budget_left // price)
        if affordable < capped:
            evidence["budget_left_per_hour"] = round(budget_left, 4)
            evidence["budget_per_hour"] = settings.budget_per_hour
            evidence["refused"] = capped - max(0, affordable)
            if affordable <= 0:
                return ScalePlan(pool.name, 0, f"budget reached ({reason})", evidence)
            capped = affordable
    return ScalePlan(pool.name, capped, reason, evidence)


def retry_after(failures: int, last_failure_at: float, settings: AutoscalerSettings) -> float | None:
    """When a pool may launch again after `failures` failed launches in a row (epoch seconds), or None."""
    if failures <= 0:
        return None
    delay = min(settings.retry_max_s, settings.retry_initial_s * 2.0 ** (failures - 1))
    return float(last_failure_at + delay)


class Autoscaler:
    """Observes the pools, plans, records each decision, launches; reconciles the pools with their providers."""

    def __init__(
        self,
        fleet: Fleet,
        settings: AutoscalerSettings,
        job_types: Callable[[str], frozenset[str] | None],
        *,
        requeue: Callable[[str], object],
        clock: Clock = time.time,
        fence: Fence | None = None,
    ) -> None:
        self.fleet = fleet
        self.settings = settings
        self.job_types = job_types
        self.requeue = requeue
        self.clock = clock
        self.fence = fence
        self.launched = 0
        self.last_plans: list[ScalePlan] = []
        self.pending: list[Future[LaunchOutcome]] = []
        self._launcher: ThreadPoolExecutor | None = None

    def _pool(self) -> ThreadPoolExecutor:
        if self._launcher is None:
            self._launcher = ThreadPoolExecutor(max_workers=4, thread_name_prefix="zeroloop-launch")
        return self._launcher

    def collect(self, timeout_s: float | None = 0.0) -> list[LaunchOutcome]:
        """The launches that finished (waiting up to `timeout_s` seconds for the others; None: all)."""
        if timeout_s != 0.0 and self.pending:
            wait(self.pending, timeout=timeout_s)
        done = [future for future in self.pending if future.done()]
        self.pending = [future for future in self.pending if not future.done()]
        outcomes = [future.result() for future in done]
        self.launched += sum(1 for outcome in outcomes if outcome.error is None)
        return outcomes

    def close(self) -> None:
        """Let launches in flight finish in the background; start no more."""
        if self._launcher is not None:
            self._launcher.shutdown(wait=False)
            self._launcher = None

    def observe(self) -> tuple[list[PoolView], list[dict[str, Any]], float, dict[str, float], dict[str, str]]:
        """The pools, the queued demand, the fleet's cost per hour now, recent job durations, backpressure."""
        now = self.clock()
        fleet = self.fleet
        with fleet.store.read() as conn:
            demand = fleet_queries.queued_demand(conn, now)
            running = fleet_queries.running_by_node(conn)
            cost = fleet.cost_per_hour(conn)
            durations = fleet_queries.mean_durations(conn, now - DURATION_WINDOW_S)
            pressure = {
                str(row["type"]): level
                for row in demand
                if (level := job_queries.get_backpressure(conn, str(row["type"]))) is not None
            }
            views = []
            for name, provider in fleet.providers.items():
                rows = node_queries.pool_nodes_current(conn, name)  # not the pool's whole history
                views.append(self._view(name, provider.pool, rows, running))
        return views, demand, cost, durations, pressure

    def _view(self, name: str, pool: PoolSettings, rows: list[dict[str, Any]], running: Mapping[str, int]) -> PoolView:
        status = [NodeStatus(row["status"]) for row in rows]
        active = [row for row, s in zip(rows, status, strict=True) if s is NodeStatus.ACTIVE]
        failures, last_failure = 0, 0.0
        for row in sorted(rows, key=lambda r: r["launched_at"] or 0.0, reverse=True):
            if row["status"] != NodeStatus.FAILED.value:
                break  # failures in a row, newest first
            failures += 1
            last_failure = max(last_failure, row["status_changed_at"])
        launches = [row["launched_at"] for row in rows if row["launched_at"] is not None]
        return PoolView(
            name=name,
            settings=pool,
            job_types=self.job_types(pool.profile),
            live=sum(1 for s in status if s in LIVE),
            active=len(active),
            starting=sum(1 for s in status if s in STARTING),
            free_slots=sum(max(0, (row["slots"] or 1) - running.get(row["id"], 0)) for row in active),
            lost=sum(1 for s in status if s is NodeStatus.LOST),
            last_launch_at=max(launches) if launches else None,
            retry_after=retry_after(failures, last_failure, self.settings),
            breaker_open=not self.fleet.breakers.allow(f"provider:{name}"),
        )

    def run_once(self) -> list[ScalePlan]:
        """One round: reconcile with the providers, plan, record the decisions, start launches."""
        self.collect()
        self.fleet.reconcile(self.requeue, self.fence)
        views, demand, cost, durations, pressure = self.observe()
        plans = plan(
            views,
            demand,
            now=self.clock(),
            settings=self.settings,
            fleet_cost_per_hour=cost,
            durations=durations,
            pressure=pressure,
        )
        for scale in plans:
            self._record(scale)
            if scale.launch and self.settings.enabled:
                try:
                    node_ids = self.fleet.request(scale.pool, scale.launch, fence=self.fence)
                except FleetError as exc:
                    log.warning("pool %s: %s", scale.pool, exc)
                    continue
                # A provider may take minutes to answer (a cloud provisioning): the launches run
                # beside the loop; the requested nodes count as starting until they do.
                for node_id in node_ids:
                    self.pending.append(self._pool().submit(self.fleet.start, node_id))
        self.last_plans = plans
        return plans

    def _record(self, scale: ScalePlan) -> None:
        """Record a plan as a decision, but only when it differs from the pool's previous one."""
        previous = next((p for p in self.last_plans if p.pool == scale.pool), None)
        if previous is not None and (previous.launch, _gist(previous.reason)) == (scale.launch, _gist(scale.reason)):
            return  # the same decision; only its figures (jobs waiting, seconds since a launch) moved
        outcome = f"launch {scale.launch}" if scale.launch and self.settings.enabled else "hold"
        if scale.launch and not self.settings.enabled:
            scale.evidence["disabled"] = True
        with self.fleet.store.transaction() as conn:
            if self.fence is not None:
                self.fence(conn)
            decision_queries.insert_decision(
                conn,
                config_key=f"fleet:{scale.pool}",
                kind="autoscale",
                outcome=outcome,
                evidence={"reason": scale.reason, **scale.evidence},
                now=self.clock(),
            )
            if "refused" in scale.evidence:  # held back (or cut short) by the budget: someone must hear of it
                budget = float(scale.evidence["budget_per_hour"])
                self.fleet.bus.publish(
                    "FLEET_BUDGET_REACHED",
                    {
                        "pool": scale.pool,
                        "budget_per_hour": budget,
                        "cost_per_hour": round(budget - float(scale.evidence["budget_left_per_hour"]), 4),
                        "refused": int(scale.evidence["refused"]),
                    },
                )


def _gist(reason: str) -> str:
    """A reason with its figures masked: "at max_nodes 2 (8 job(s) waiting)" -> "at max_nodes # (# job(s) waiting)"."""
    return _FIGURE.sub("#", reason)


_FIGURE = re.compile(r"\d+(?:\.\d+)?")


class AutoscalerDaemon(LoopDaemon):
    """Runs the autoscaler every `autoscaler.interval_s` seconds on the leader."""

    def __init__(self, autoscaler: Autoscaler, interval_s: float, *, clock: Clock) -> None:
        super().__init__(interval_s, clock=clock)
        self.autoscaler = autoscaler

    async def tick(self) -> None:
        """One autoscaler round, off the event loop."""
        await asyncio.to_thread(self.autoscaler.run_once)

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until stopped, then stop starting launches."""
        try:
            await super().run(stop)
        finally:
            self.autoscaler.close()

    def details(self) -> dict[str, Any]:
        """Machines launched so far and the last plan per pool."""
        return {
            "launched": self.autoscaler.launched,
            "launching": len(self.autoscaler.pending),
            "plans": {p.pool: f"{p.launch}: {p.reason}" for p in self.autoscaler.last_plans},
        }


def autoscaler_daemon(context: DaemonContext[AppParts]) -> AutoscalerDaemon:
    """Factory of the `autoscaler` daemon."""
    app = context.parts
    autoscaler = Autoscaler(
        app.fleet,
        app.settings.autoscaler,
        jobs.profile_job_types,
        requeue=app.queue.requeue_node,
        clock=context.clock,
        fence=leader_fence(app.leases, context.leadership),
    )
    return AutoscalerDaemon(autoscaler, app.settings.autoscaler.interval_s, clock=context.clock)
