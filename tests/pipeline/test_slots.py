"""A node's slots share its GPUs, memory and per-type limits, and follow a utilisation target."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers import run_async
from zeroloop.app import App
from zeroloop.pipeline.slots import SlotBudget, Slots
from zeroloop.queue.jobs import Job, Lease


def _claim(app: App, budget: SlotBudget, types: tuple[str, ...] = ("selfplay", "train")) -> Lease | None:
    with budget.claiming():
        capabilities, allowed = budget.offer(types)
        if not allowed:
            return None
        lease = app.queue.claim("n8", capabilities, allowed)
        if lease is not None:
            budget.take(lease.job)
        return lease


def test_eight_gpus_run_eight_one_gpu_jobs_or_one_job_on_all_eight(app: App) -> None:
    budget = SlotBudget(gpus=8, memory_bytes=64 << 30, labels=frozenset())
    train = app.queue.enqueue("train", "c_2p", requires={"gpus": 8}, priority=10)
    for _ in range(9):
        app.queue.enqueue("selfplay", "c_2p", requires={"gpus": 1})
    first = _claim(app, budget)
    assert first is not None and first.job.id == train.id  # all eight GPUs are free: the big job first
    assert _claim(app, budget) is None  # nothing left for a one-GPU job
    budget.give(train.id)
    held: list[Job] = []
    while (lease := _claim(app, budget)) is not None and len(held) < 20:
        held.append(lease.job)
    assert len(held) == 8  # one per GPU; the ninth waits
    budget.give(held[0].id)
    assert _claim(app, budget) is not None


def test_a_per_node_limit_per_type_is_kept(app: App) -> None:
    budget = SlotBudget(gpus=0, memory_bytes=0, labels=frozenset(), max_per_type={"train": 1})
    for _ in range(2):
        app.queue.enqueue("train", "c_2p")
        app.queue.enqueue("train", "d_2p")
    first = _claim(app, budget, ("train",))
    assert first is not None
    assert _claim(app, budget, ("train",)) is None  # the node's one train slot is taken
    assert budget.offer(("selfplay", "train"))[1] == ("selfplay",)
    budget.give(first.job.id)
    assert _claim(app, budget, ("train",)) is not None


class FakeSlot:
    """A slot that runs until stopped (or crashes when told to)."""

    def __init__(self, crash: bool = False) -> None:
        self.jobs_done = 0
        self.stopped = asyncio.Event()
        self.crash = crash

    async def run(self) -> None:
        if self.crash:
            raise RuntimeError("slot broke")
        await self.stopped.wait()

    def stop(self) -> None:
        self.stopped.set()


@run_async
async def test_without_a_target_every_slot_runs_and_stop_ends_them_all() -> None:
    made: list[FakeSlot] = []

    def make() -> FakeSlot:
        made.append(FakeSlot())
        return made[-1]

    slots = Slots(make, 3)
    running = asyncio.ensure_future(slots.run())
    await asyncio.sleep(0)  # let run() start its slots
    assert len(made) == 3 and slots.health()["slots"] == 3
    slots.stop()
    await asyncio.wait_for(running, timeout=5)
    assert all(slot.stopped.is_set() for slot in made)


@run_async
async def test_a_crashing_slot_stops_the_others_and_is_raised() -> None:
    made: list[FakeSlot] = []

    def make() -> FakeSlot:
        made.append(FakeSlot(crash=len(made) == 1))
        return made[-1]

    with pytest.raises(RuntimeError, match="slot broke"):
        await asyncio.wait_for(Slots(make, 2).run(), timeout=5)
    assert made[0].stopped.is_set()


@run_async
async def test_slots_follow_the_utilisation_target() -> None:
    loads = iter([20.0, 30.0, 65.0, 95.0, 95.0, 95.0])
    slots = Slots(FakeSlot, 3, target_pct=70.0, probe=lambda: next(loads), interval_s=3600)
    slots._add()  # what run() starts with under a target: one slot
    for expected in (2, 3, 3, 2, 1, 1):  # under: add up to 3; in the band: keep; over: retire down to 1
        await slots.adjust()
        assert len(slots.active) == expected
    assert slots.health()["slot_changes"] == 4
    for slot, _task in slots.retired:
        assert slot.stopped.is_set()  # type: ignore[attr-defined]
    for _slot, task in slots.active + slots.retired:
        task.cancel()
    await asyncio.gather(*(task for _slot, task in slots.active + slots.retired), return_exceptions=True)
