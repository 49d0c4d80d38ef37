"""A node's executor slots: several jobs at once, sharing the node's GPUs and memory, sized to a utilisation target.

`SlotBudget` is what the node has: each claim is offered the GPUs and memory the other
slots left free, and only the job types still under their per-node limit
(`cluster.max_jobs_per_type`, the seeds' `can_spawn`). So an 8-GPU machine runs eight
one-GPU selfplay jobs, or, once they are done, one training job that needs all eight.
The offer, the claim and the taking happen under one lock, so two slots never both
count the same free GPU.

`Slots` runs the executors. With `cluster.utilisation_target_pct` set it starts with one
and, every `cluster.slot_interval_s`, adds a slot while the node's utilisation (GPU, else
CPU) is below the target by more than the band, or retires one (it finishes its job
first) while above it, between 1 and `cluster.slots` (the seeds' resource optimizer).
Without a target every slot runs from the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from zeroloop.queue.jobs import Capabilities, Job

log = logging.getLogger(__name__)

BAND_PCT = 10.0  # utilisation within target ± band changes nothing


@dataclass(frozen=True)
class _Held:
    job_type: str
    gpus: int
    memory_bytes: int


class SlotBudget:
    """The node's GPUs, memory and per-type limits, shared by its slots (sizes in bytes)."""

    def __init__(
        self, *, gpus: int, memory_bytes: int, labels: frozenset[str], max_per_type: Mapping[str, int] | None = None
    ) -> None:
        self.gpus = gpus
        self.memory_bytes = memory_bytes
        self.labels = labels
        self.max_per_type = dict(max_per_type or {})
        self._held: dict[int, _Held] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def claiming(self) -> Iterator[None]:
        """Hold the budget while one slot is offered resources, claims and takes: slots claim one at a time."""
        with self._lock:
            yield

    def offer(self, job_types: Sequence[str]) -> tuple[Capabilities, tuple[str, ...]]:
        """What a claim may ask for now: the free GPUs and memory, and the types under their node limit."""
        used_gpus = sum(held.gpus for held in self._held.values())
        used_memory = sum(held.memory_bytes for held in self._held.values())
        running: dict[str, int] = {}
        for held in self._held.values():
            running[held.job_type] = running.get(held.job_type, 0) + 1
        allowed = tuple(t for t in job_types if running.get(t, 0) < self.max_per_type.get(t, 1 << 30))
        free = Capabilities(
            gpus=max(0, self.gpus - used_gpus),
            memory_bytes=max(0, self.memory_bytes - used_memory),
            labels=self.labels,
        )
        return free, allowed

    def take(self, job: Job) -> None:
        """Count a claimed job's resources as used until `give`."""
        need = job.requires
        self._held[job.id] = _Held(job.type, need.gpus, need.memory_bytes)

    def give(self, job_id: int) -> None:
        """A job ended: its resources are free again."""
        self._held.pop(job_id, None)

    def held(self) -> int:
        """Jobs held now."""
        return len(self._held)


class Slot(Protocol):
    """One executor: `run()` claims and runs jobs until `stop()`."""

    jobs_done: int

    async def run(self) -> None:
        """Claim and run jobs until stopped."""

    def stop(self) -> None:
        """Finish the job in flight, then stop claiming."""


class Slots:
    """Runs a node's slots; with a utilisation target, adds and retires them to stay near it."""

    def __init__(
        self,
        make: Callable[[], Slot],
        maximum: int,
        *,
        target_pct: float | None = None,
        probe: Callable[[], float] | None = None,
        interval_s: float = 30.0,
    ) -> None:
        """`make` builds one slot; `probe` reads the node's utilisation (%), needed with `target_pct`."""
        if target_pct is not None and probe is None:
            raise ValueError("a utilisation target needs a probe")
        self.make = make
        self.maximum = max(1, maximum)
        self.target_pct = target_pct
        self.probe = probe
        self.interval_s = interval_s
        self.active: list[tuple[Slot, asyncio.Future[None]]] = []
        self.retired: list[tuple[Slot, asyncio.Future[None]]] = []
        self._stopping = asyncio.Event()
        self.changes = 0

    def _add(self) -> None:
        slot = self.make()
        self.active.append((slot, asyncio.ensure_future(slot.run())))

    def _retire(self) -> None:
        slot, task = self.active.pop()
        slot.stop()
        self.retired.append((slot, task))

    async def adjust(self) -> None:
        """One step toward the target: add a slot when under it, retire one when over it."""
        if self.target_pct is None or self.probe is None:
            return
        load = await asyncio.to_thread(self.probe)
        if load < self.target_pct - BAND_PCT and len(self.active) < self.maximum:
            self._add()
            self.changes += 1
            log.info("utilisation %.0f%% under target %.0f%%: %d slot(s)", load, self.target_pct, len(self.active))
        elif load > self.target_pct + BAND_PCT and len(self.active) > 1:
            self._retire()
            self.changes += 1
            log.info("utilisation %.0f%% over target %.0f%%: %d slot(s)", load, self.target_pct, len(self.active))

    async def run(self) -> None:
        """Run until stopped and every slot has ended; a crashing slot stops the others and re-raises."""
        for _ in range(1 if self.target_pct is not None else self.maximum):
            self._add()
        loop = asyncio.get_running_loop()
        next_adjust = loop.time() + self.interval_s
        stopping: asyncio.Future[Any] = asyncio.ensure_future(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                tasks: list[asyncio.Future[Any]] = [task for _slot, task in self.active + self.retired]
                await asyncio.wait(
                    [stopping, *tasks], timeout=max(0.0, next_adjust - loop.time()), return_when=asyncio.FIRST_COMPLETED
                )
                crashed = [task for task in tasks if task.done() and not task.cancelled() and task.exception()]
                if crashed:
                    raise crashed[0].exception()  # type: ignore[misc]
                self.retired = [(slot, task) for slot, task in self.retired if not task.done()]
                if not self._stopping.is_set() and loop.time() >= next_adjust:
                    await self.adjust()
                    next_adjust = loop.time() + self.interval_s
        finally:
            stopping.cancel()
            for slot, _task in self.active:
                slot.stop()
            results = await asyncio.gather(
                *(task for _slot, task in self.active + self.retired), return_exceptions=True
            )
        errors = [result for result in results if isinstance(result, BaseException)]
        if errors:
            raise errors[0]

    def stop(self) -> None:
        """Each slot finishes its job in flight, then stops claiming."""
        self._stopping.set()

    def health(self) -> dict[str, Any]:
        """Slots running, changes made toward the target, and jobs done in all."""
        slots = [slot for slot, _task in self.active + self.retired]
        return {
            "slots": len(self.active),
            "max_slots": self.maximum,
            "target_pct": self.target_pct,
            "slot_changes": self.changes,
            "jobs_done": sum(slot.jobs_done for slot in slots),
        }
