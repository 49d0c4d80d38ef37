"""PostgreSQL stopped in the middle of a run and started again: the coordinator rides it out by itself.

A coordinator profile runs in process on a PostgreSQL server of the test's own. The
server is stopped (every connection cut) for a few seconds and started again. No daemon
may crash, fail or stay down, the supervisor must keep running and write the daemon
table again, and the events published before, during (refused, retried) and after the
outage must each be handled once. The code handles an outage of any length; the test
keeps it short.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.pgserver import PgServer
from zeroloop.app import App
from zeroloop.bootstrap import initialize_all_coordinators, shutdown_all_coordinators
from zeroloop.cli.run import table_for_cli
from zeroloop.config import ClusterSettings, DaemonSettings, EventSettings, Settings, StoreSettings
from zeroloop.daemons.daemon import DaemonState
from zeroloop.daemons.manager import DaemonManager
from zeroloop.events.consumer import is_transient
from zeroloop.store import migrate
from zeroloop.store.database import Store
from zeroloop.store.queries import consumers as consumer_queries
from zeroloop.store.queries import daemons as daemon_queries
from zeroloop.store.queries import pipelines as pipeline_queries

pytestmark = pytest.mark.slow

CONFIG = "tic_tac_toe_2p"
SAMPLES = 5
OUTAGE_S = 60.0  # as the issue found it: longer than every lease, heartbeat and backoff


@pytest.fixture
def pg() -> Iterator[PgServer]:
    """A PostgreSQL server this test may stop and start (in a directory the postgres user can reach)."""
    workdir = Path(tempfile.mkdtemp(prefix="zeroloop-outage-"))
    workdir.chmod(0o755)  # the server runs as user postgres when the tests run as root
    server = None
    try:
        server = PgServer(workdir / "pg")
        yield server
    finally:
        if server is not None:
            server.close()
        shutil.rmtree(workdir, ignore_errors=True)


async def until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Wait (bounded) until `check()` holds, looking every 50 ms; a store error counts as not yet."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if await asyncio.to_thread(check):
                return
        except Exception as exc:
            if not is_transient(exc):
                raise
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout_s} s: {what}")


def publish_selfplay(app: App, job_id: int) -> None:
    payload = {"config_key": CONFIG, "job_id": job_id, "artifact_sha256": f"{job_id:064x}", "games": 1}
    app.bus.publish("SELFPLAY_COMPLETE", {**payload, "samples": SAMPLES}, dedup_key=f"test:{job_id}")


def samples_total(app: App) -> int:
    with app.store.read() as conn:
        row = pipeline_queries.get_pipeline(conn, CONFIG)
    return 0 if row is None else int(row["samples_total"])


def delivered(app: App) -> int:
    with app.store.read() as conn:
        rows = consumer_queries.read_metrics(conn)
    return sum(
        int(r["delivered"]) for r in rows if r["consumer"] == "pipeline" and r["event_type"] == "SELFPLAY_COMPLETE"
    )


async def ride_out(app: App, pg: PgServer) -> None:
    await initialize_all_coordinators(app, profile="coordinator", table=table_for_cli())
    manager = app.daemons
    assert isinstance(manager, DaemonManager)
    try:
        await until(lambda: manager.state("pipeline") is DaemonState.RUNNING, 30, "the pipeline daemon leads")
        for job_id in (1, 2, 3):
            await asyncio.to_thread(publish_selfplay, app, job_id)
        await until(lambda: samples_total(app) == 3 * SAMPLES, 30, "the first events are handled")
        before = {name: manager.state(name) for name in manager.records}

        await asyncio.to_thread(pg.stop)
        await until(lambda: manager.failing_since is not None, 20, "the supervisor notices the outage")
        with pytest.raises(Exception) as refused:
            await asyncio.to_thread(publish_selfplay, app, 4)
        assert is_transient(refused.value)
        await asyncio.sleep(OUTAGE_S)  # the outage itself
        assert manager._supervisor is not None and not manager._supervisor.done()
        await asyncio.to_thread(pg.start)
        back_at = time.time()

        async def publish_again(job_id: int) -> None:
            await until(lambda: publish_selfplay(app, job_id) is None, 10, f"event {job_id} is published")

        for job_id in (4, 5, 6):
            await publish_again(job_id)
        await until(lambda: samples_total(app) == 6 * SAMPLES, 30, "the events after the outage are handled")
        await until(lambda: manager.failing_since is None, 10, "the supervisor writes again")
        await until(
            lambda: {name: manager.state(name) for name in manager.records} == before, 15, "every daemon is back"
        )
        assert not manager._supervisor.done()
        assert delivered(app) == 6 and samples_total(app) == 6 * SAMPLES  # each handled once

        def rows_fresh() -> bool:
            with app.store.read() as conn:
                rows = daemon_queries.list_daemons(conn)
            return bool(rows) and all(float(row["updated_at"]) >= back_at for row in rows)

        await until(rows_fresh, 15, "the daemons table is written again")
    finally:
        await shutdown_all_coordinators(app)


def test_a_coordinator_rides_out_a_postgresql_outage(pg: PgServer, tmp_path: Path, settings: Settings) -> None:
    with Store(pg.url) as store:
        migrate.upgrade(store)
    fast = Settings(
        data_dir=tmp_path / "data",
        store=StoreSettings(url=pg.url, connect_timeout_s=1.0, ping_after_idle_s=0.0),
        cluster=ClusterSettings(node_id="c1", leader_lease_s=2.0, heartbeat_interval_s=0.5),
        daemons=DaemonSettings(
            supervise_interval_s=0.1, health_interval_s=0.3, outage_retry_max_s=0.5, drain_deadline_s=3.0
        ),
        events=EventSettings(outage_retry_max_s=0.5, listen_fallback_s=0.5, retry_initial_s=0.1, retry_max_s=0.5),
    )
    with App(fast, upgrade=False) as app:
        asyncio.run(ride_out(app, pg))
