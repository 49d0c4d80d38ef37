"""The readings the leader takes for the dashboard's charts over time, and the daemon that takes them.

Queue depth, nodes by state and cost have no history of their own in the store (their
rows hold the present), so every `dashboard.readings_interval_s` (60 s) the `readings`
daemon (leader only) records one row of figures (`readings` table, times in epoch seconds):

- `queue`: per job type, the jobs `queued` and `running`, the queued ones `due` now and the
  wait of the oldest due one (`oldest_due_s`), and of the jobs that finished in the counting
  window (below), how many (`finished`) and their mean and longest wait from due to claim
  (`mean_wait_s`, `max_wait_s`);
- `nodes`: how many nodes are in each state; `cost_per_hour`: what the billed nodes cost
  together now; `cost_total`: what every node of the registry has cost so far (currency units);
- `pipelines`: per config key its round, `samples_total` and `games_total` so far, and the
  compute its jobs used so far: `slot_s` (job wall time, claim to finish, seconds),
  `cpu_s` (CPU seconds the workload measured, from the `cpu_s` count of a job's evidence),
  `gpu_s` (wall time times the GPUs per slot of the job's node), `jobs` and
  `jobs_with_cpu` (those that reported `cpu_s`).

Each reading counts the jobs that finished in its window, from the previous reading's
`counted_until` to its own, `SETTLE_S` before it: a job is counted once its finish is that
old, so one whose transaction commits after a reading that its finish time precedes (a
late commit, a worker's clock a little behind) lands in the next window rather than in
none. A window holds at most `MAX_JOBS_PER_READING` jobs (the first reading after an
upgrade counts the whole table over several readings). The compute totals are running
sums: each reading adds its window's jobs to the previous reading's totals, so they
outlive the deletion of finished jobs by retention. The figures are read outside the
write, which touches the readings table only. Readings younger than
`dashboard.readings_full_days` all stay; older ones are thinned to the first of each hour,
so a month-long run's curves cost about 24 rows a day.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from zeroloop.cluster.leases import Fence, leader_fence
from zeroloop.cluster.nodes import cost_of
from zeroloop.config import DashboardSettings
from zeroloop.daemons.daemon import Clock, DaemonContext, LoopDaemon
from zeroloop.ports import AppParts
from zeroloop.store.database import Store
from zeroloop.store.queries import nodes as node_queries
from zeroloop.store.queries import pipelines as pipeline_queries
from zeroloop.store.queries import readings as queries
from zeroloop.store.queries import series as series_queries

SETTLE_S = 120.0
"""A finished job is counted into the compute totals once its finish is this old (seconds)."""
THIN_BUCKET_S = 3600.0
"""Readings older than `dashboard.readings_full_days` keep one per this span (seconds)."""
THIN_EVERY_S = 3600.0
"""How often the daemon thins old readings (seconds)."""
MAX_JOBS_PER_READING = 20_000
"""The most finished jobs one reading counts; more wait for the next readings (the first after an upgrade)."""
COMPUTE = ("slot_s", "cpu_s", "gpu_s", "jobs", "jobs_with_cpu")
"""The running compute totals a reading keeps per config key."""


def job_compute(job: Mapping[Any, Any], node: Mapping[Any, Any] | None) -> dict[str, float]:
    """What one finished job adds to its config's compute totals (see the module docstring)."""
    wall = max(0.0, float(job["finished_at"]) - float(job["claimed_at"]))
    result = job["result"] if isinstance(job["result"], dict) else {}
    counts = result.get("counts") or {}
    cpu = counts.get("cpu_s")
    measured = isinstance(cpu, int | float) and not isinstance(cpu, bool) and math.isfinite(cpu) and cpu >= 0
    cpu_s = float(cpu) if measured and cpu is not None else 0.0
    gpus = len(node["gpus"] or []) / max(1, int(node["slots"] or 1)) if node is not None else 0.0
    return {
        "slot_s": wall,
        "cpu_s": cpu_s,
        "gpu_s": wall * gpus,
        "jobs": 1.0,
        "jobs_with_cpu": 1.0 if measured else 0.0,
    }


def _window(conn: Any, after: float, until: float) -> tuple[list[Any], float]:
    """The finished jobs a reading counts, from `after` to `until`, at most MAX_JOBS_PER_READING; and where they end.

    A batch cut short ends at the finish time of its last job; if more jobs finished at that
    same instant than the batch holds, the batch ends before that instant and they all go to
    the next reading together, which takes an instant's jobs whole even above the limit.
    """
    rows = series_queries.finished_jobs(conn, after=after, until=until, limit=MAX_JOBS_PER_READING + 1)
    if len(rows) <= MAX_JOBS_PER_READING:
        return rows, until
    last = float(rows[MAX_JOBS_PER_READING - 1]["finished_at"])
    if float(rows[MAX_JOBS_PER_READING]["finished_at"]) != last:
        return rows[:MAX_JOBS_PER_READING], last
    kept = [row for row in rows if float(row["finished_at"]) < last]
    if kept:
        return kept, float(kept[-1]["finished_at"])
    return series_queries.finished_at_exactly(conn, last), last


def figures(conn: Any, now: float, previous: Mapping[Any, Any] | None) -> dict[str, Any]:
    """The figures of a reading at `now` (epoch seconds), continuing the running totals of `previous`."""
    before = dict(previous["figures"]) if previous is not None else {}
    counted_from = float(before.get("counted_until", -1.0))
    finished, counted_until = _window(conn, counted_from, max(counted_from, now - SETTLE_S))
    nodes = {row["id"]: row for row in node_queries.list_nodes(conn)}
    waits: dict[str, list[float]] = {}
    totals: dict[str, dict[str, float]] = {
        key: {name: float(value.get(name, 0.0)) for name in COMPUTE}
        for key, value in (before.get("pipelines") or {}).items()
    }
    for job in finished:
        waits.setdefault(job["type"], []).append(max(0.0, float(job["claimed_at"]) - float(job["run_after"])))
        added = job_compute(job, nodes.get(job["lease_node"]))
        into = totals.setdefault(job["config_key"], dict.fromkeys(COMPUTE, 0.0))
        for name, value in added.items():
            into[name] += value
    queue = series_queries.queue_now(conn, now)
    for job_type in sorted(set(queue) | set(waits)):
        entry = queue.setdefault(job_type, {"queued": 0, "running": 0, "due": 0, "oldest_due_at": None})
        oldest = entry.pop("oldest_due_at")
        waited = waits.get(job_type, [])
        entry.update(
            oldest_due_s=None if oldest is None else max(0.0, now - oldest),
            finished=len(waited),
            mean_wait_s=sum(waited) / len(waited) if waited else None,
            max_wait_s=max(waited) if waited else None,
        )
    by_state: dict[str, int] = {}
    for row in nodes.values():
        by_state[row["status"]] = by_state.get(row["status"], 0) + 1
    pipelines: dict[str, dict[str, Any]] = {key: dict(value) for key, value in totals.items()}
    for state in pipeline_queries.list_pipelines(conn):
        entry = pipelines.setdefault(state["config_key"], dict.fromkeys(COMPUTE, 0.0))
        entry.update(
            iteration=int(state["iteration"]),
            samples_total=int(state["samples_total"]),
            games_total=int((state["progress"] or {}).get("games_total") or 0),
        )
    return {
        "queue": queue,
        "nodes": by_state,
        "cost_per_hour": float(sum(row["cost_per_hour"] or 0.0 for row in nodes.values() if row["billing_since"])),
        "cost_total": float(sum(cost_of(dict(row), now) for row in nodes.values())),
        "pipelines": pipelines,
        "counted_until": counted_until,
    }


class Readings:
    """Takes readings into the store and thins old ones; run it on the leader only (clock: epoch seconds)."""

    def __init__(
        self,
        store: Store,
        settings: DashboardSettings,
        *,
        clock: Callable[[], float] = time.time,
        fence: Fence | None = None,
    ) -> None:
        """`fence(conn)` refuses the reading's write unless this process still leads."""
        self.store = store
        self.settings = settings
        self.clock = clock
        self.fence = fence
        self.thinned_at: float | None = None
        self.thinned = 0
        self.skipped = 0

    def take(self) -> dict[str, Any] | None:
        """Record one reading now and return its figures; thin the old readings at most every THIN_EVERY_S.

        The figures are read first, outside the write; the write goes ahead only if no other
        reading was recorded meanwhile (a leader that took over mid-reading), else this one
        is dropped (None), so no window is counted twice.
        """
        now = self.clock()
        with self.store.read() as conn:
            previous = queries.latest_reading(conn)
            found = figures(conn, now, previous)
        with self.store.transaction() as conn:
            if self.fence is not None:
                self.fence(conn)
            latest = queries.latest_reading(conn)
            if (latest["id"] if latest else None) != (previous["id"] if previous else None):
                self.skipped += 1
                return None
            queries.insert_reading(conn, now, found)
            if self.thinned_at is None or now - self.thinned_at >= THIN_EVERY_S:
                before = now - self.settings.readings_full_days * 86400.0
                self.thinned += queries.thin_readings(conn, before=before, bucket_s=THIN_BUCKET_S)
                self.thinned_at = now
        return found


class ReadingsDaemon(LoopDaemon):
    """Takes a reading every interval."""

    def __init__(self, readings: Readings, interval_s: float, *, clock: Clock) -> None:
        super().__init__(interval_s, clock=clock)
        self.readings = readings
        self.taken = 0

    async def tick(self) -> None:
        """One reading."""
        if await asyncio.to_thread(self.readings.take) is not None:
            self.taken += 1

    def details(self) -> dict[str, Any]:
        """How many readings this daemon took, dropped (another was recorded meanwhile) and thinned away."""
        return {"taken": self.taken, "skipped": self.readings.skipped, "thinned": self.readings.thinned}


def readings_daemon(context: DaemonContext[AppParts]) -> ReadingsDaemon:
    """Factory of the `readings` daemon."""
    app = context.parts
    settings = app.settings.dashboard
    fence = leader_fence(app.leases, context.leadership)
    readings = Readings(app.store, settings, clock=context.clock, fence=fence)
    return ReadingsDaemon(readings, settings.readings_interval_s, clock=context.clock)
