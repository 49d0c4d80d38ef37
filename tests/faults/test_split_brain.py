"""Split brain, in process: a leader paused past its lease resumes after a successor took over.

Two Apps on one store stand for two coordinator processes on one fake clock. The old
leader resumes with its in-memory cursor behind the successor's and its old token: each
of its effects must be refused inside its own transaction, so every event is handled
once and every sample counted once, and it must step down and count the refusal.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers import FakeClock, run_async
from zeroloop.app import App
from zeroloop.cli.run import table_for_cli
from zeroloop.cluster.leases import LeaderElector, LeaderFence, leader_fence
from zeroloop.daemons.adapters import ServiceDaemon
from zeroloop.daemons.daemon import DaemonContext, DaemonState, Leadership
from zeroloop.daemons.manager import DaemonManager
from zeroloop.daemons.table import DaemonSpec, Layer
from zeroloop.errors import LeaseError
from zeroloop.events.runner import ConsumerRunner
from zeroloop.pipeline import jobs
from zeroloop.pipeline.coordinator import PipelineCoordinator
from zeroloop.pipeline.daemons import SchedulerDaemon
from zeroloop.pipeline.progress import ProgressRecorder
from zeroloop.queue.jobs import JobStatus
from zeroloop.store.queries import consumers as consumer_queries
from zeroloop.store.queries import pipelines as pipeline_queries

CONFIG = "tic_tac_toe_2p"
SAMPLES = 7


def elect(app: App) -> tuple[Leadership, LeaderElector, LeaderFence]:
    """This app's leadership, its elector and the fence of its leader-only writes."""
    leadership = Leadership()
    return leadership, LeaderElector(app.leases, leadership), leader_fence(app.leases, leadership)


def pipeline_runner(app: App, fence: LeaderFence, clock: FakeClock) -> ConsumerRunner:
    """The `pipeline` daemon's consumers (coordinator and progress recorder) over `app`, fenced."""
    coordinator = PipelineCoordinator(app.store, app.bus, app.queue, app.models, app.settings, clock=clock)
    recorder = ProgressRecorder(app.store, clock=clock)
    return ConsumerRunner(app.bus, [coordinator.spec(), recorder.spec()], app.settings.events, clock=clock, fence=fence)


def finish_selfplay(app: App, first_job: int, count: int) -> None:
    """Publish `count` SELFPLAY_COMPLETE events, as workers would."""
    for job_id in range(first_job, first_job + count):
        payload = {"config_key": CONFIG, "job_id": job_id, "artifact_sha256": f"{job_id:064x}", "games": 1}
        app.bus.publish("SELFPLAY_COMPLETE", {**payload, "samples": SAMPLES})


def samples_total(app: App) -> int:
    with app.store.read() as conn:
        row = pipeline_queries.get_pipeline(conn, CONFIG)
    assert row is not None
    return int(row["samples_total"])


def delivered(app: App, consumer: str, event_type: str) -> int:
    with app.store.read() as conn:
        rows = consumer_queries.read_metrics(conn)
    return sum(int(row["delivered"]) for row in rows if row["consumer"] == consumer and row["event_type"] == event_type)


@run_async
async def test_a_resumed_leader_handles_no_event_twice(two_apps: tuple[App, App], clock: FakeClock) -> None:
    a, b = two_apps
    lead_a, elector_a, fence_a = elect(a)
    lead_b, elector_b, fence_b = elect(b)
    assert elector_a.tick() and not elector_b.tick()
    runner_a = pipeline_runner(a, fence_a, clock)
    finish_selfplay(a, 1, 4)
    await runner_a.run_until_idle()
    assert samples_total(a) == 4 * SAMPLES

    clock.advance(a.settings.cluster.leader_lease_s + 1)  # a is paused past its lease ...
    assert elector_b.tick() and lead_b.token == lead_a.token + 1  # ... and b takes over
    finish_selfplay(b, 5, 3)
    runner_b = pipeline_runner(b, fence_b, clock)
    await runner_b.run_until_idle()

    # a resumes: it still believes it leads, its cursor is where it paused (behind b's).
    assert lead_a.held
    with pytest.raises(LeaseError, match="stale"):
        await runner_a.run_until_idle()
    assert fence_a.refusals == 1 and not lead_a.held and lead_a.token is None
    assert samples_total(a) == 7 * SAMPLES
    assert delivered(a, "pipeline", "SELFPLAY_COMPLETE") == 7
    assert delivered(a, "pipeline-progress", "GAME_BATCH_READY") == 7
    assert fence_b.refusals == 0


@run_async
async def test_a_resumed_leader_enqueues_and_pauses_nothing(two_apps: tuple[App, App], clock: FakeClock) -> None:
    a, b = two_apps
    lead_a, elector_a, _ = elect(a)
    lead_b, elector_b, _ = elect(b)
    assert elector_a.tick()
    with a.store.transaction() as conn:
        pipeline_queries.ensure_pipeline(conn, CONFIG, clock())
    scheduler_a = SchedulerDaemon(DaemonContext(a, lead_a, clock))
    scheduler_b = SchedulerDaemon(DaemonContext(b, lead_b, clock))
    clock.advance(a.settings.cluster.leader_lease_s + 1)
    assert elector_b.tick()

    with pytest.raises(LeaseError):
        scheduler_a.scheduler.tick()
    assert a.queue.list(statuses=[JobStatus.QUEUED], job_type=jobs.SELFPLAY) == []
    lead_a.held, lead_a.token = True, 1  # as if a had not learned of the first refusal
    with pytest.raises(LeaseError):
        scheduler_a.apply_pause(True)
    with a.store.read() as conn:
        assert not pipeline_queries.get_pipeline(conn, CONFIG)["paused"]  # type: ignore[index]
    assert scheduler_a.fence.refusals == 2

    assert sum(scheduler_b.scheduler.tick().values()) > 0  # the current leader is not refused
    assert scheduler_b.fence.refusals == 0


@run_async
async def test_a_refused_daemon_steps_down_to_standby_and_counts_it(
    two_apps: tuple[App, App], clock: FakeClock
) -> None:
    a, b = two_apps
    a.settings.pipeline.scheduler_interval_s = 0.01
    lead_a, elector_a, _ = elect(a)
    _, elector_b, _ = elect(b)
    assert elector_a.tick()
    with a.store.transaction() as conn:
        pipeline_queries.ensure_pipeline(conn, CONFIG, clock())
    spec = DaemonSpec(
        "selfplay_scheduler",
        SchedulerDaemon,
        "tops up selfplay",
        frozenset({"coordinator"}),
        layer=Layer.APPLICATION,
        leader_only=True,
    )
    manager = DaemonManager([spec], DaemonContext(a, lead_a, clock))
    await manager.start()
    assert manager.state("selfplay_scheduler") is DaemonState.RUNNING
    clock.advance(a.settings.cluster.leader_lease_s + 1)
    assert elector_b.tick()

    task = manager.records["selfplay_scheduler"].task
    assert task is not None
    await asyncio.wait_for(asyncio.wait({task}), timeout=10)  # its next tick is refused
    await manager.step()
    assert manager.state("selfplay_scheduler") is DaemonState.STANDBY
    row = manager.snapshot()[0]
    assert row["health"]["details"]["fence_refusals"] == 1
    assert "stepped down" in row["health"]["reason"]
    assert not lead_a.held and manager.records["selfplay_scheduler"].restarts == 0
    await manager.shutdown()


def test_every_leader_only_consumer_daemon_is_fenced(two_apps: tuple[App, App], clock: FakeClock) -> None:
    a, _ = two_apps
    context = DaemonContext(a, Leadership(), clock)
    runners = {}
    for spec in table_for_cli().specs.values():
        if not spec.leader_only:
            continue
        daemon = spec.build(context)
        runner = getattr(daemon.service, "runner", None) if isinstance(daemon, ServiceDaemon) else None
        if runner is not None:
            runners[spec.name] = (runner.fence, daemon.service.retrier.fence)  # type: ignore[attr-defined]
    assert {"pipeline", "operations"} <= set(runners)
    assert all(isinstance(fence, LeaderFence) for pair in runners.values() for fence in pair), runners
