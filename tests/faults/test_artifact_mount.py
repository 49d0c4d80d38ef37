"""An artifact location on a mount of its own fills up: selfplay backpressure and the disk daemon see it.

The data directory sits on the machine's disk; the artifact location on a 2 MiB tmpfs, which
the test fills. Both disk readers (the node's own backpressure, by which its executor claims
no selfplay at STOP, and the `disk_space` daemon's) watch the fullest of the two, so the node
takes no new selfplay while the artifact disk is full and takes it again once it has room.
The cluster's backpressure, read from queue depth alone, is left as it was. On SQLite and
PostgreSQL.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from zeroloop.app import App
from zeroloop.config import ArtifactSettings, Settings, StoreSettings
from zeroloop.ops.maintenance import DiskSpaceManager, disk_reader
from zeroloop.pipeline import jobs
from zeroloop.queue.backpressure import BackpressureLevel, NodePressure, psutil_reader

PRODUCERS = frozenset({jobs.SELFPLAY})


def test_a_full_artifact_mount_stops_selfplay(
    store_url: str, tmp_path: Path, settings: Settings, small_disk: Path
) -> None:
    data_disk = shutil.disk_usage(tmp_path)
    if 100.0 * data_disk.used / data_disk.total >= 80.0:
        pytest.skip("this machine's own disk is nearly full: the data directory's disk would stop selfplay itself")
    location = small_disk / "artifacts"
    configured = Settings(
        data_dir=tmp_path / "data",
        store=StoreSettings(url=store_url),
        artifacts=ArtifactSettings(url=location.as_uri()),
    )
    assert configured.disk_paths == (tmp_path / "data", location)
    work = (jobs.SELFPLAY, jobs.TRAIN)
    node = NodePressure(configured.queue, psutil_reader(configured.disk_paths), producers=PRODUCERS, max_age_s=0)
    with App(configured, upgrade=False) as app:
        assert node.claimable(work) == work
        filler = small_disk / "filler"
        with filler.open("wb", buffering=0) as handle, pytest.raises(OSError):
            while True:  # ends: the tmpfs refuses the write that would overfill it
                handle.write(bytes(65536))
        assert node.level() is BackpressureLevel.STOP and node.claimable(work) == (jobs.TRAIN,)
        assert app.queue.check_backpressure(jobs.SELFPLAY) < BackpressureLevel.STOP  # the cluster's: queue depth
        manager = DiskSpaceManager(
            configured, app.artifacts.cache, app.bus, node="w1", read=disk_reader(configured.disk_paths)
        )
        assert manager.check().selfplay_refused
        filler.unlink()  # room again
        assert node.claimable(work) == work
        assert not manager.check().selfplay_refused


def test_the_watched_disks_are_the_data_directory_and_a_local_artifact_location(tmp_path: Path) -> None:
    local = Settings(data_dir=tmp_path / "d", artifacts=ArtifactSettings(url=str(tmp_path / "a b")))
    assert local.disk_paths == (tmp_path / "d", tmp_path / "a b")
    uri = Settings(data_dir=tmp_path / "d", artifacts=ArtifactSettings(url=(tmp_path / "a b").as_uri()))
    assert uri.disk_paths == (tmp_path / "d", tmp_path / "a b")  # percent-escapes decoded
    remote = Settings(data_dir=tmp_path / "d", artifacts=ArtifactSettings(url="s3://bucket/artifacts"))
    assert remote.disk_paths == (tmp_path / "d",)  # an object store's space is not this machine's
    default = Settings(data_dir=tmp_path / "d")
    assert default.disk_paths == (tmp_path / "d", tmp_path / "d" / "artifacts")
