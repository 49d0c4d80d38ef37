"""The operations daemons: disk space on a node, store upkeep and retention, scheduled backups; fenced on the leader."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from tests.helpers import FakeClock
from zeroloop.app import App
from zeroloop.artifacts.cache import LocalCache
from zeroloop.artifacts.transfer import ArtifactKind
from zeroloop.config import BackupSettings, MaintenanceSettings, RetentionSettings, Settings, StoreSettings
from zeroloop.daemons.daemon import DaemonContext, Leadership
from zeroloop.errors import LeaseError, OperationsError
from zeroloop.ops.daemons import BackupDaemon, MaintenanceDaemon
from zeroloop.ops.maintenance import DiskSpaceManager, Schedule
from zeroloop.queue.backpressure import BackpressureLevel, NodePressure, Resources
from zeroloop.store.queries import pipelines as pipeline_queries
from zeroloop.store.schema import events, jobs
from zeroloop.workload.datafiles import write_npz

DAY = 86400.0
CONFIG = "tic_tac_toe_2p"


@pytest.fixture
def app(store_url: str, tmp_path: Path, clock: FakeClock) -> Iterator[App]:
    settings = Settings(
        data_dir=tmp_path / "data",
        store=StoreSettings(url=store_url),
        retention=RetentionSettings(finished_jobs_days=1, interval_s=DAY),
        maintenance=MaintenanceSettings(store_interval_s=3600, vacuum_interval_s=7 * DAY, consolidate_interval_s=DAY),
        backup=BackupSettings(interval_s=DAY, keep=2, continuous_interval_s=0),
    )
    with App(settings, upgrade=False, clock=clock) as opened:
        yield opened


def _published(app: App, event_type: str) -> list[dict[str, object]]:
    with app.store.read() as conn:
        query = sa.select(events.c.payload).where(events.c.type == event_type).order_by(events.c.id)
        return list(conn.execute(query).scalars())


def _lead(app: App, leadership: Leadership) -> None:
    leadership.token = app.leases.acquire("leader")
    leadership.held = leadership.token is not None


def test_a_filling_disk_evicts_the_cache_first_then_the_node_refuses_selfplay_itself(app: App, tmp_path: Path) -> None:
    cache = LocalCache(tmp_path / "cache", max_bytes=10**9)
    for index in range(3):
        sha = f"{index}" * 64
        path = cache.path(sha)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 4000)
        os.utime(path, (1000 + index, 1000 + index))  # entry 0 is the least recently used
    base = {"pct": 80.0}

    def disk_pct() -> float:  # the disk fills with the cache: 1 % per 1000 bytes on top of the rest
        return min(100.0, base["pct"] + cache.size_bytes() / 1000)

    manager = DiskSpaceManager(app.settings, cache, app.bus, node="n1", read=disk_pct)
    pressure = NodePressure(
        app.settings.queue,
        lambda: Resources(memory_pct=10.0, disk_pct=disk_pct()),
        producers=frozenset({"selfplay"}),
        max_age_s=0.0,
    )

    first = manager.check()  # 92 %: past the soft limit (85 %), below the hard one (97 %)
    assert (first.disk_pct, first.after_pct, first.evicted_bytes, first.selfplay_refused) == (92.0, 84.0, 8000, False)
    assert cache.get("2" * 64) is not None and cache.get("0" * 64) is None  # least recently used went first
    assert _published(app, "DISK_SPACE_LOW") == [
        {"node": "n1", "disk_pct": 92.0, "evicted_bytes": 8000, "selfplay_refused": False}
    ]
    assert manager.check().evicted_bytes == 0
    assert _published(app, "DISK_SPACE_RECOVERED") == [{"node": "n1", "disk_pct": 84.0}]

    base["pct"] = 97.5  # something else fills the disk: evicting the whole cache is not enough
    full = manager.check()
    assert (full.evicted_bytes, full.selfplay_refused) == (4000, True)
    assert pressure.claimable(("selfplay", "train")) == ("train",)  # this node takes no new selfplay...
    assert app.queue.backpressure.recorded("selfplay") is BackpressureLevel.NONE  # ...the cluster's level is its own
    app.queue.enqueue("selfplay", "tic_tac_toe_2p", {"games": 1})  # other nodes still get selfplay
    assert manager.check().selfplay_refused  # still full: refused, announced once
    assert [p["selfplay_refused"] for p in _published(app, "DISK_SPACE_LOW")] == [False, True]

    base["pct"] = 50.0  # space was freed
    assert not manager.check().selfplay_refused
    assert pressure.claimable(("selfplay", "train")) == ("selfplay", "train")
    assert [p["disk_pct"] for p in _published(app, "DISK_SPACE_RECOVERED")] == [84.0, 50.0]


def test_maintenance_runs_store_upkeep_and_retention_on_schedule_fenced(
    app: App, clock: FakeClock, tmp_path: Path
) -> None:
    leadership = Leadership()
    _lead(app, leadership)
    job = app.queue.enqueue("selfplay", "tic_tac_toe_2p", {"games": 1})
    lease = app.queue.claim("w1", types=["selfplay"])
    assert lease is not None
    app.queue.complete(job.id, lease.token, {"ok": True})
    schedule_file = tmp_path / "data" / "maintenance.json"
    daemon = MaintenanceDaemon(DaemonContext(app, leadership, clock), Schedule(schedule_file, clock))
    assert daemon.run_due() == []  # the first sight of a task starts its clock
    clock.advance(3600)
    _lead(app, leadership)
    assert daemon.run_due() == ["store"]
    if app.store.backend == "postgresql":
        with app.store.read() as conn:
            analyzed = conn.execute(sa.text("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'jobs'"))
            assert analyzed.scalar() is not None

    clock.advance(7 * DAY)
    leadership.token, leadership.held = None, False  # this process lost the lease
    with pytest.raises(LeaseError):
        daemon.run_due()
    with app.store.read() as conn:
        assert conn.execute(sa.select(jobs.c.id)).scalars().all() == [job.id]  # a deposed leader deleted nothing

    if app.store.backend == "sqlite":  # leave free pages behind, for VACUUM to reclaim
        with app.store.transaction() as conn:
            conn.execute(sa.text("CREATE TABLE scratch AS SELECT randomblob(4000) AS x FROM jobs, jobs a, jobs b"))
            conn.execute(sa.text("INSERT INTO scratch SELECT randomblob(4000) FROM scratch"))
            conn.execute(sa.text("DROP TABLE scratch"))
        with app.store.read() as conn:
            assert conn.execute(sa.text("PRAGMA freelist_count")).scalar() > 0
    restarted = MaintenanceDaemon(DaemonContext(app, leadership, clock), Schedule(schedule_file, clock))
    _lead(app, leadership)
    ran = restarted.run_due()  # the schedule survived the restart: everything is overdue
    vacuum = ["vacuum"] if app.store.backend == "sqlite" else []  # PostgreSQL's autovacuum does that
    assert ran == ["store", *vacuum, "consolidate", "gc"]
    assert restarted.last_gc["jobs"] == 1
    with app.store.read() as conn:
        assert conn.execute(sa.select(jobs.c.id)).scalars().all() == []
        if app.store.backend == "sqlite":
            assert conn.execute(sa.text("PRAGMA freelist_count")).scalar() == 0  # VACUUM rewrote the file
    assert restarted.run_due() == []


def test_backups_are_taken_on_schedule_pruned_and_fenced(app: App, clock: FakeClock) -> None:
    leadership = Leadership()
    _lead(app, leadership)
    daemon = BackupDaemon(DaemonContext(app, leadership, clock))
    assert daemon.run_due() is None  # none yet: the first is due one interval after the start
    clock.advance(DAY)
    _lead(app, leadership)
    first = daemon.run_due()
    assert first is not None and daemon.run_due() is None
    taken = [first]
    for _ in range(2):
        clock.advance(DAY)
        _lead(app, leadership)
        taken.append(daemon.run_due())
    assert [info.id for info in daemon.backups.ls()] == taken[1:]  # keep = 2
    assert _published(app, "BACKUP_CREATED")[-1]["pruned"] == [first]

    clock.advance(DAY)
    leadership.token, leadership.held = None, False
    with pytest.raises(LeaseError):
        daemon.run_due()
    assert [info.id for info in daemon.backups.ls()] == taken[1:]


def test_a_failing_consolidation_does_not_keep_gc_from_running(app: App, clock: FakeClock, tmp_path: Path) -> None:
    leadership = Leadership()
    _lead(app, leadership)
    with app.store.transaction() as conn:
        pipeline_queries.ensure_pipeline(conn, CONFIG, clock())
    job = app.queue.enqueue("selfplay", CONFIG, {"games": 1})
    lease = app.queue.claim("w1", types=["selfplay"])
    assert lease is not None
    app.queue.complete(job.id, lease.token, {"ok": True})
    for seed, board in ((1, 3), (2, 4)):  # the game's board changed between them: numpy cannot merge the two
        _game_batch(app, tmp_path, seed, board)
    daemon = MaintenanceDaemon(DaemonContext(app, leadership, clock), Schedule(tmp_path / "schedule.json", clock))
    assert daemon.run_due() == []
    clock.advance(DAY + 3600)
    _lead(app, leadership)
    with pytest.raises(OperationsError, match=r"^maintenance: consolidate failed \(ValueError: .*\); store, gc ran$"):
        daemon.run_due()
    with app.store.read() as conn:
        assert conn.execute(sa.select(jobs.c.id)).scalars().all() == []  # gc ran and deleted the finished job
    assert daemon.details()["failing"] == {"consolidate": daemon.failures["consolidate"]}
    assert daemon.ran["gc"] == 1 and daemon.ran["consolidate"] == 0
    assert daemon.run_due() == []  # the failed task waits for its next interval, like the others


def _game_batch(app: App, tmp_path: Path, seed: int, board: int) -> str:
    """A stored game batch of two games of `board` x 3 x 3 observations."""
    rng = np.random.default_rng(seed)
    positions = 6
    arrays = {
        "obs": rng.random((positions, board, 3, 3), dtype=np.float32),
        "policy": np.full((positions, 9), 1 / 9, dtype=np.float32),
        "value": np.zeros((positions, 2), dtype=np.float32),
        "mask": np.ones((positions, 9), dtype=np.bool_),
        "game_index": np.repeat(np.arange(2, dtype=np.int32), 3),
        "game_lengths": np.full(2, 3, dtype=np.int32),
        "config_key": np.asarray(CONFIG),
        "model_sha256": np.asarray("model"),
        "num_games": np.asarray(2, dtype=np.int64),
    }
    path = tmp_path / f"batch-{seed}.npz"
    write_npz(path, arrays)
    meta = {"samples": positions, "games": 2}
    return app.artifacts.put(path, ArtifactKind.GAME_BATCH, config_key=CONFIG, meta=meta).sha256
