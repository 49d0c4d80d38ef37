"""The fleet on the local provider, with real worker processes.

The autoscaler grows a pool from 0 to its maximum when work is queued, the workers
finish the work, and idle shutdown shrinks the pool back to its minimum through the
provider; a worker killed with SIGKILL is found gone, marked lost and replaced; a node
holding the only copy of an artifact is drained and evacuated before it may go.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet.providers.contract import wait_until
from tests.fleet.providers.test_slurm import SELFPLAY
from zeroloop.app import App
from zeroloop.artifacts.transfer import ArtifactKind
from zeroloop.cluster.agent import NodeAgent
from zeroloop.cluster.nodes import LIVE, NodeInfo, NodeStatus
from zeroloop.config import AutoscalerSettings, IdleSettings, PoolSettings, Settings, StoreSettings, WorkloadSettings
from zeroloop.fleet.autoscaler import Autoscaler
from zeroloop.fleet.idle import IdleShutdown
from zeroloop.fleet.manager import FleetError
from zeroloop.pipeline import jobs
from zeroloop.queue.jobs import JobStatus


def _settings(tmp_path: Path, *, min_nodes: int, max_nodes: int) -> Settings:
    code = tmp_path / "selfplay.py"
    code.write_text(SELFPLAY)
    commands = tmp_path / "commands.toml"
    commands.write_text(f'[selfplay]\ncommand = "{sys.executable} {code} {{output}} {{games}}"\n')
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    worker_env = {
        "ZEROLOOP_WORKLOAD__KIND": "command",
        "ZEROLOOP_WORKLOAD__COMMAND_FILE": str(commands),
        "ZEROLOOP_CLUSTER__HEARTBEAT_INTERVAL_S": "0.5",
        "ZEROLOOP_DAEMONS__DRAIN_DEADLINE_S": "3",
    }
    pool = PoolSettings(
        kind="local",
        profile="selfplay",
        min_nodes=min_nodes,
        max_nodes=max_nodes,
        price_per_hour=0.5,
        launch_timeout_s=60,
        idle_s=2.0,
        drain_s=0.0,
        env=worker_env,
        options={"kill_after_s": 5},
    )
    return Settings(
        data_dir=data_dir,
        store=StoreSettings(url=f"sqlite:///{data_dir / 'zeroloop.db'}"),
        workload=WorkloadSettings(kind="command", command_file=commands),
        providers={"local": pool},
        autoscaler=AutoscalerSettings(launch_cooldown_s=0),
    )


@contextlib.contextmanager
def cpu_burner(seconds: float = 120.0) -> Iterator[None]:
    """Load every core of this machine with busy loops while the block runs (each ends by itself after `seconds`)."""
    burn = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"
    burners = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(os.cpu_count() or 1)]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait(timeout=10)


def _statuses(app: App) -> list[str]:
    return [row["status"] for row in app.nodes.list_nodes()]


def _stop_all(app: App) -> None:
    provider = app.fleet.provider("local")
    for machine in provider.machines():
        os.kill(int(machine.provider_id.split(":")[0]), signal.SIGKILL)


@pytest.mark.slow
def test_pool_grows_to_max_for_queued_work_then_shrinks_to_min_when_idle(tmp_path: Path) -> None:
    settings = _settings(tmp_path, min_nodes=0, max_nodes=2)
    with App(settings) as app:
        try:
            queued = [app.queue.enqueue(jobs.SELFPLAY, "ringrift_2p", {"games": 2}) for _ in range(8)]
            scaler = Autoscaler(app.fleet, settings.autoscaler, jobs.profile_job_types, requeue=app.queue.requeue_node)
            (plan,) = scaler.run_once()
            assert plan.launch == 2 and plan.evidence["queued_jobs"] == 8  # capped at max_nodes
            assert [outcome.error for outcome in scaler.collect(timeout_s=30)] == [None, None]
            assert sorted(_statuses(app)) == ["launching", "launching"]
            assert scaler.run_once()[0].launch == 0  # the starting machines count: nothing more

            def done() -> bool:
                scaler.run_once()
                return all(app.queue.get(job.id).status is JobStatus.COMPLETED for job in queued)

            assert wait_until(done, 90, interval_s=0.5), _statuses(app)
            workers = {app.queue.get(job.id).lease_node for job in queued}
            assert workers <= {row["id"] for row in app.nodes.list_nodes()}

            # The shipped idle settings: the pool's own idle_s and drain_s decide. Both cores are
            # loaded by another process meanwhile: the nodes ran no job, so they are idle all the same.
            idle = IdleShutdown(
                app.store,
                app.bus,
                app.nodes,
                IdleSettings(),
                terminate=lambda node, reason: app.fleet.terminate(node.id, reason=reason),
                pools=settings.providers,
            )

            def shrunk() -> bool:
                idle.run_once()
                scaler.run_once()  # reconciles: terminating machines that are gone become terminated
                return _statuses(app) == ["terminated", "terminated"] and not app.fleet.provider("local").machines()

            with cpu_burner():
                assert wait_until(shrunk, 90, interval_s=0.5), _statuses(app)
            assert app.fleet.provider("local").machines() == []
            assert app.fleet.costs()["local"] > 0  # two machines billed while they ran
        finally:
            scaler.close()
            _stop_all(app)


@pytest.mark.slow
def test_a_worker_killed_with_sigkill_is_marked_lost_and_replaced(tmp_path: Path) -> None:
    settings = _settings(tmp_path, min_nodes=1, max_nodes=1)
    with App(settings) as app:
        try:
            scaler = Autoscaler(app.fleet, settings.autoscaler, jobs.profile_job_types, requeue=app.queue.requeue_node)
            assert scaler.run_once()[0].reason == "1 below min_nodes"

            def active() -> bool:
                scaler.run_once()
                return _statuses(app) == ["active"]

            assert wait_until(active, 60, interval_s=0.3), _statuses(app)
            (first,) = app.nodes.list_nodes()
            os.kill(int(first["provider_id"].split(":")[0]), signal.SIGKILL)

            def replaced() -> bool:
                scaler.run_once()
                rows = {row["id"]: row["status"] for row in app.nodes.list_nodes()}
                return rows.get(first["id"]) in ("lost", "terminated") and "active" in rows.values()

            assert wait_until(replaced, 60, interval_s=0.3), app.nodes.list_nodes()
        finally:
            scaler.close()
            _stop_all(app)


def test_a_node_with_the_only_copy_is_evacuated_before_it_may_be_terminated(tmp_path: Path) -> None:
    blocked = tmp_path / "shared"
    blocked.write_text("not a directory: uploads fail")
    settings = Settings(
        data_dir=tmp_path / "data",
        artifacts={"url": blocked.as_uri()},
        cluster={"node_id": "w1"},
    )
    with App(settings) as app:
        app.nodes.register(NodeInfo("w1", "h", "local", 1, 1, 1))
        batch = tmp_path / "batch.npz"
        batch.write_bytes(b"games" * 100)
        artifact = app.artifacts.put(batch, ArtifactKind.GAME_BATCH)
        assert app.artifacts.sole_copies_on("w1") == [artifact.sha256]  # held on the node, recorded so
        with pytest.raises(FleetError, match="only copy of 1 artifact"):
            app.fleet.terminate("w1", reason="test")
        assert app.nodes.get("w1")["status"] == "draining"  # type: ignore[index]
        assert app.fleet.settle_drains() == []  # not drained while it holds the only copy

        blocked.unlink()  # the shared location is back
        agent = NodeAgent(
            app.nodes,
            lambda: NodeInfo("w1", "h", "local", 1, 1, 1),
            dict,
            1.0,
            clock=time.time,
            evacuate=app.artifacts.evacuate,
        )
        agent.node_id = "w1"
        import asyncio

        asyncio.run(agent.tick())
        assert agent.evacuated == 1
        assert app.artifacts.sole_copies_on("w1") == []
        assert app.artifacts.fetch(artifact.sha256).read_bytes() == b"games" * 100
        assert app.fleet.settle_drains() == ["w1"]
        assert app.fleet.terminate("w1", reason="test") is NodeStatus.TERMINATING
        assert NodeStatus(app.nodes.get("w1")["status"]) not in LIVE  # type: ignore[index]


def test_bad_pool_settings_are_one_clear_line(tmp_path: Path) -> None:
    from zeroloop.errors import ConfigError

    with pytest.raises(ConfigError, match=r"providers\.x\.kind: unknown kind 'nope'"):
        App(Settings(data_dir=tmp_path, providers={"x": PoolSettings(kind="nope")}))
    with pytest.raises(ConfigError, match=r"max_nodes \(1\) is below min_nodes \(3\)"):
        PoolSettings(kind="local", min_nodes=3, max_nodes=1)
    settings = _settings(tmp_path, min_nodes=0, max_nodes=1)
    with App(settings) as app:
        with pytest.raises(FleetError, match="unknown provider pool 'gpu'"):
            app.fleet.launch("gpu")
        with pytest.raises(FleetError, match="max_nodes 1"):
            app.fleet.launch("local", 2)
        assert app.nodes.list_nodes() == []  # nothing launched
