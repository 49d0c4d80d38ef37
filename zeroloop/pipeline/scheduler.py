"""The selfplay scheduler: keeps every config's selfplay work queued, in proportion to its need.

Each tick (run on the leader) it computes a weight per unpaused config key,

    weight = 1 + 2 * deficit + staleness + velocity

with deficit = share of `train_after_samples` still missing before the next round (0..1),
staleness = minutes since the config's last game batch / 10 (capped at 1), and velocity
= the production model's joint-rating gain over `evaluation.velocity_window_s`, per hour,
/ 100 (clamped to 0..1): a config that is short of data, starved, or improving fast gets
more of the shared workers. A config on a plateau (zeroloop.pipeline.curriculum) has its
weight multiplied by `evaluation.plateau_weight`. The target of queued selfplay
jobs, `selfplay_queue_target`, is split by weight (at least one job each) and halved at
backpressure SOFT or above; at HARD or above nothing is added. Jobs are topped up to the
target, never removed. While the `selfplay` stage's circuit breaker is open nothing is
added (counted in `held_back`). With a `fence` (the leader's lease guard) one tick's jobs are
enqueued in one transaction that the fence opens: a deposed leader enqueues nothing.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from zeroloop import tracing
from zeroloop.cluster.breakers import CircuitBreakers, stage_key
from zeroloop.config import Settings
from zeroloop.pipeline import jobs
from zeroloop.pipeline.curriculum import promotions, velocity, weight_of_velocity
from zeroloop.queue.backpressure import BackpressureLevel
from zeroloop.queue.jobs import JobStatus
from zeroloop.queue.manager import JobQueue
from zeroloop.store.database import Store
from zeroloop.store.queries import pipelines as queries

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConfigNeed:
    """What the scheduler knows of one config key (seconds, samples, Elo points)."""

    config_key: str
    samples_since_training: int
    since_last_batch_s: float
    elo_gain_last_hour: float  # production's Elo velocity (Elo per hour)
    factor: float = 1.0  # the curriculum's factor: plateau_weight on a plateau


def weight(need: ConfigNeed, train_after_samples: int) -> float:
    """The scheduling weight of a config key (see the module docstring)."""
    deficit = max(0.0, 1.0 - need.samples_since_training / train_after_samples)
    staleness = min(1.0, need.since_last_batch_s / 600.0)
    return need.factor * (1.0 + 2.0 * deficit + staleness + weight_of_velocity(need.elo_gain_last_hour))


def allocate(weights: Mapping[str, float], target: int, level: BackpressureLevel) -> dict[str, int]:
    """Queued selfplay jobs wanted per config key for a total `target`, throttled by backpressure."""
    if not weights or level >= BackpressureLevel.HARD:
        return dict.fromkeys(weights, 0)
    total = max(len(weights), target // 2 if level >= BackpressureLevel.SOFT else target)
    whole = sum(weights.values())
    return {key: max(1, math.floor(total * value / whole)) for key, value in weights.items()}


class SelfplayScheduler:
    """Tops up queued selfplay jobs per config key; run it on the leader only."""

    def __init__(
        self,
        store: Store,
        queue: JobQueue,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        fence: Callable[[Connection], None] | None = None,
        breakers: CircuitBreakers | None = None,
    ) -> None:
        """`fence(conn)` refuses the tick's enqueues unless this process still leads; `breakers` may hold them back."""
        self.store = store
        self.queue = queue
        self.settings = settings.pipeline
        self.velocity_window_s = settings.evaluation.velocity_window_s
        self.clock = clock
        self.fence = fence
        self.breakers = breakers
        self.enqueued = 0
        self.held_back = 0  # ticks that added nothing because the selfplay circuit was open

    def needs(self) -> list[ConfigNeed]:
        """The current need of every unpaused pipeline."""
        now = self.clock()
        with self.store.read() as conn:
            states = [state for state in queries.list_pipelines(conn) if not state["paused"]]
            result = []
            for state in states:
                gain = velocity(promotions(conn, state["config_key"]), now, self.velocity_window_s)
                progress = state["progress"] or {}
                last_batch = float(progress.get("last_batch_at", state["updated_at"]))
                factor = float((progress.get("curriculum") or {}).get("weight_factor", 1.0))
                result.append(
                    ConfigNeed(
                        state["config_key"], int(state["samples_since_training"]), now - last_batch, gain, factor
                    )
                )
        return result

    def _train_after(self, config_key: str) -> int:
        return self.settings.for_key(config_key).train_after_samples

    def tick(self) -> dict[str, int]:
        """Enqueue what is missing; return how many jobs were added per config key."""
        needs = self.needs()
        if not needs:
            return {}
        if self.breakers is not None and not self.breakers.allow(stage_key(jobs.SELFPLAY)):
            self.held_back += 1
            log.warning("selfplay scheduler: the selfplay circuit breaker is open; adding no jobs")
            return {}
        level = self.queue.check_backpressure(jobs.SELFPLAY)
        wanted = allocate(
            {need.config_key: weight(need, self._train_after(need.config_key)) for need in needs},
            self.settings.selfplay_queue_target,
            level,
        )
        added: dict[str, int] = {}
        with self.store.transaction() as conn:
            if self.fence is not None:
                self.fence(conn)
            for config_key, target in wanted.items():
                queued = len(
                    self.queue.list(
                        statuses=[JobStatus.QUEUED], job_type=jobs.SELFPLAY, config_key=config_key, limit=target + 1
                    )
                )
                for _ in range(max(0, target - queued)):
                    payload = jobs.SelfplayJob(games=self.settings.selfplay_games_per_job)
                    # Each selfplay job starts a trace, which its game batch carries into the round it feeds.
                    with tracing.span("enqueue selfplay", root=True, attributes={"zeroloop.config_key": config_key}):
                        self.queue.enqueue(jobs.SELFPLAY, config_key, payload.model_dump(), priority=10)
                    added[config_key] = added.get(config_key, 0) + 1
        self.enqueued += sum(added.values())
        if added:
            log.debug("selfplay scheduler added %s (backpressure %s)", added, level.name)
        return added
