"""The recovery point: the backup daemon snapshots the store every `backup.continuous_interval_s`, so a lost store
costs at most that much work. On SQLite and PostgreSQL, on a fake clock: each change is in a snapshot one interval
after it was made, and restoring the newest snapshot into a wiped store brings it back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.helpers import FakeClock
from zeroloop.app import App
from zeroloop.config import BackupSettings, Settings, StoreSettings
from zeroloop.daemons.daemon import DaemonContext, Leadership
from zeroloop.ops.backup import CONTINUOUS, Backups
from zeroloop.ops.daemons import BackupDaemon
from zeroloop.ops.restore import Restorer
from zeroloop.store.schema import jobs

INTERVAL_S = 300.0
CONFIG = "tic_tac_toe_2p"


@pytest.fixture
def app(store_url: str, tmp_path: Path, clock: FakeClock, settings: Settings) -> Iterator[App]:
    backup = BackupSettings(interval_s=86400.0, continuous_interval_s=INTERVAL_S, continuous_keep=3)
    configured = Settings(data_dir=tmp_path / "data", store=StoreSettings(url=store_url), backup=backup)
    with App(configured, upgrade=False, clock=clock) as opened:
        yield opened


def _job_ids(app: App) -> set[int]:
    with app.store.read() as conn:
        return set(conn.execute(sa.select(jobs.c.id)).scalars())


def test_every_change_is_in_a_snapshot_one_interval_later_and_restores(app: App, clock: FakeClock) -> None:
    leadership = Leadership()
    daemon = BackupDaemon(DaemonContext(app, leadership, clock))
    assert daemon.interval_s <= INTERVAL_S  # it looks at least as often as a snapshot is due
    made: dict[int, float] = {}
    snapshots: list[tuple[str, float]] = []
    for _step in range(8):  # a change every 100 s, and a daemon tick after each
        made[app.queue.enqueue("selfplay", CONFIG, {"games": 1}).id] = clock()
        clock.advance(100.0)
        leadership.token = app.leases.acquire("leader")
        leadership.held = True
        last = daemon.last_snapshot
        assert daemon.run_due() is None  # the daily backup is not due within these minutes
        if daemon.last_snapshot != last:
            assert daemon.last_snapshot is not None
            snapshots.append((daemon.last_snapshot, clock()))
    start = clock() - 800.0
    assert [at - start for _id, at in snapshots] == [300.0, 600.0]  # one interval apart, from the daemon's start

    backups = Backups(app.settings, app.store)
    assert [info.id for info in backups.ls() if info.label == CONTINUOUS] == [taken for taken, _at in snapshots]
    newest, newest_at = snapshots[-1]
    restorer = Restorer(backups)
    assert restorer.verify(newest).rows["jobs"] == sum(1 for when in made.values() if when < newest_at)

    report = restorer.restore(newest, force=True)  # the store is lost: the newest snapshot comes back
    restored = _job_ids(app)
    older_than_an_interval = {job for job, when in made.items() if when <= clock() - INTERVAL_S}
    assert older_than_an_interval <= restored  # the recovery point: nothing older than one interval is lost
    assert restored == {job for job, when in made.items() if when < newest_at}
    assert report.pre_restore is not None


def test_continuous_snapshots_are_pruned_to_their_own_count(app: App, clock: FakeClock) -> None:
    leadership = Leadership()
    daemon = BackupDaemon(DaemonContext(app, leadership, clock))
    taken = []
    for _ in range(5):
        clock.advance(INTERVAL_S)
        leadership.token = app.leases.acquire("leader")
        leadership.held = True
        taken.append(daemon.run_continuous())
    clock.advance(86400.0)
    leadership.token = app.leases.acquire("leader")
    daily = daemon.run_due()
    listed = Backups(app.settings, app.store).ls()
    assert [info.id for info in listed if info.label == CONTINUOUS] == [*taken[-2:], daemon.last_snapshot]
    assert [info.id for info in listed if info.label == ""] == [daily]  # the daily one is kept apart
