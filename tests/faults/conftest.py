"""Fixtures of the fault tests: two Apps on one store, standing for two coordinator processes."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import FakeClock, make_app
from zeroloop.app import App
from zeroloop.config import ClusterSettings, Settings
from zeroloop.events.bus import EventBus
from zeroloop.store.database import Store


def quiet(app: App, clock: FakeClock) -> App:
    """Put `app`'s lease manager and queue on `clock`."""
    app.leases.clock = clock
    app.queue.clock = clock
    app.queue.backpressure.clock = clock
    return app


@pytest.fixture
def two_apps(store_url: str, tmp_path: Path, settings: Settings, clock: FakeClock) -> Iterator[tuple[App, App]]:
    """Apps `a` and `b` on the store under test, as two coordinators on two nodes, sharing one fake clock."""
    cluster_a = ClusterSettings(node_id="a", leader_lease_s=10.0)
    cluster_b = ClusterSettings(node_id="b", leader_lease_s=10.0)
    with (
        make_app(store_url, tmp_path / "a", cluster=cluster_a) as a,
        make_app(store_url, tmp_path / "b", cluster=cluster_b) as b,
    ):
        yield quiet(a, clock), quiet(b, clock)


@pytest.fixture
def bus(store: Store, clock: FakeClock) -> EventBus:
    """A bus on the store under test."""
    return EventBus(store, node="n1", source="test", clock=clock)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, unmounted afterwards; skips where mounting is not permitted."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], check=False, capture_output=True
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False, capture_output=True)
