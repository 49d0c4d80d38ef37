"""The Slurm provider against a real single-host Slurm: the contract, bad input, and a worker that does real jobs."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.fleet.providers.contract import ProviderContract, wait_until
from tests.fleet.providers.slurm_cluster import SlurmCluster
from zeroloop.app import App
from zeroloop.config import PoolSettings, Settings, StoreSettings, WorkloadSettings
from zeroloop.fleet.providers.base import LaunchSpec, MachineState, ProviderError
from zeroloop.fleet.providers.slurm import SlurmProvider
from zeroloop.pipeline import jobs
from zeroloop.queue.jobs import JobStatus
from zeroloop.store.schema import nodes

SELFPLAY = """
import sys, numpy as np
out, games = sys.argv[1], int(sys.argv[2])
np.savez(out, num_games=np.asarray(games), obs=np.zeros((games * 3, 2)))
"""


def _provider(cluster: SlurmCluster, tmp_path: Path, **options: object) -> SlurmProvider:
    pool = PoolSettings(
        kind="slurm",
        max_nodes=2,
        cpus=1,
        memory_gb=0.25,
        price_per_hour=0.5,
        options={"partition": "zl", "time_limit": "00:10:00", "slurm_conf": str(cluster.conf), **options},
    )
    return SlurmProvider("gpu", pool, data_dir=tmp_path)


class TestSlurmContract(ProviderContract):
    settle_s = 20.0

    @pytest.fixture
    def provider(self, slurm_cluster: SlurmCluster, tmp_path: Path) -> SlurmProvider:
        return _provider(slurm_cluster, tmp_path)


def test_a_partition_that_does_not_exist_is_one_clear_line(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    provider = _provider(slurm_cluster, tmp_path, partition="nope")
    with pytest.raises(ProviderError) as refused:
        provider.check()
    assert str(refused.value) == "slurm pool gpu: partition 'nope' does not exist (sinfo knows: debug, zl)"
    spec = LaunchSpec("n-nope", "gpu", "selfplay", ("true",), {})
    with pytest.raises(ProviderError, match=r"^slurm pool gpu: sbatch failed \(exit 1\): .*invalid partition"):
        provider.launch(spec)
    assert all(machine.node_id != "n-nope" for machine in provider.machines())  # nothing launched


def test_offers_describe_the_partition_nodes(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    (offer,) = _provider(slurm_cluster, tmp_path).offers()
    assert offer.name.startswith(f"gpu:zl:{offer.cpus}cpu-")
    assert offer.cpus >= 1 and offer.memory_bytes > 0 and offer.gpus == 0
    assert offer.price_per_hour == 0.5


def test_a_slurm_job_runs_a_worker_that_completes_real_jobs_until_scancel(
    slurm_cluster: SlurmCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = tmp_path / "selfplay.py"
    code.write_text(SELFPLAY)
    commands = tmp_path / "commands.toml"
    commands.write_text(f'[selfplay]\ncommand = "{sys.executable} {code} {{output}} {{games}}"\n')
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    store_url = f"sqlite:///{data_dir / 'zeroloop.db'}"
    settings = Settings(
        data_dir=data_dir,
        store=StoreSettings(url=store_url),
        workload=WorkloadSettings(kind="command", command_file=commands),
    )
    # SLURM_CONF from the environment, not the option: the provider passes it through to every command.
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    pool = PoolSettings(kind="slurm", profile="selfplay", cpus=1, options={"partition": "zl"})
    provider = SlurmProvider("cpu", pool, data_dir=tmp_path)
    provider.check()
    node_id = f"slurm-{uuid.uuid4().hex[:6]}"
    env = {
        "ZEROLOOP_DATA_DIR": str(data_dir),
        "ZEROLOOP_STORE__URL": store_url,
        "ZEROLOOP_WORKLOAD__KIND": "command",
        "ZEROLOOP_WORKLOAD__COMMAND_FILE": str(commands),
        "ZEROLOOP_CLUSTER__NODE_ID": node_id,
        "ZEROLOOP_CLUSTER__HEARTBEAT_INTERVAL_S": "1",
        "ZEROLOOP_DAEMONS__DRAIN_DEADLINE_S": "3",
        "ZEROLOOP_EVENTS__POLL_INTERVAL_S": "0.05",
    }
    with App(settings) as app:
        queued = [app.queue.enqueue(jobs.SELFPLAY, "ringrift_2p", {"games": 2}) for _ in range(3)]
        argv = ("zeroloop", "worker", "--profile", "selfplay")
        launched = provider.launch(LaunchSpec(node_id, "cpu", "selfplay", argv, env))
        try:
            log = next(iter(provider.log_dir.glob(f"{node_id}-*.log")), None)

            def all_done() -> bool:
                return all(app.queue.get(job.id).status is JobStatus.COMPLETED for job in queued)

            finished = wait_until(all_done, 40, interval_s=0.3)
            log = next(iter(provider.log_dir.glob(f"{node_id}-*.log")), log)
            output = log.read_text(errors="replace")[-3000:] if log else "(no job log)"
            assert finished, f"{[app.queue.get(j.id).status for j in queued]}\n{output}\n{slurm_cluster.logs()}"
            assert {app.queue.get(job.id).lease_node for job in queued} == {node_id}
            (machine,) = [m for m in provider.machines() if m.provider_id == launched.provider_id]
            assert (machine.state, machine.node_id) == (MachineState.RUNNING, node_id)
        finally:
            provider.terminate(launched.provider_id)

        def gone() -> bool:
            states = [m.state for m in provider.machines() if m.provider_id == launched.provider_id]
            return states == [MachineState.GONE]  # CANCELLED: past COMPLETING, the worker process has exited

        assert wait_until(gone, 20), provider.machines()
        assert launched.provider_id not in slurm_cluster.jobs()  # Slurm itself no longer runs it

        def left() -> bool:
            with app.store.read() as conn:
                status = conn.execute(sa.select(nodes.c.status).where(nodes.c.id == node_id)).scalar_one_or_none()
            return status == "terminated"

        # scancel sent the worker SIGTERM: it drained and left the cluster rather than waiting to be found lost.
        assert wait_until(left, 15), log.read_text(errors="replace")[-3000:] if log else "(no job log)"


def test_the_fleet_grows_a_slurm_pool_for_work_and_idle_shutdown_ends_it_with_scancel(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    from zeroloop.config import AutoscalerSettings, IdleSettings
    from zeroloop.fleet.autoscaler import Autoscaler
    from zeroloop.fleet.idle import IdleShutdown

    code = tmp_path / "selfplay.py"
    code.write_text(SELFPLAY)
    commands = tmp_path / "commands.toml"
    commands.write_text(f'[selfplay]\ncommand = "{sys.executable} {code} {{output}} {{games}}"\n')
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    pool = PoolSettings(
        kind="slurm",
        profile="selfplay",
        max_nodes=1,
        cpus=1,
        launch_timeout_s=60,
        idle_s=1.0,
        drain_s=0.0,
        env={
            "ZEROLOOP_WORKLOAD__KIND": "command",
            "ZEROLOOP_WORKLOAD__COMMAND_FILE": str(commands),
            "ZEROLOOP_CLUSTER__HEARTBEAT_INTERVAL_S": "1",
            "ZEROLOOP_DAEMONS__DRAIN_DEADLINE_S": "3",
        },
        options={"partition": "zl", "slurm_conf": str(slurm_cluster.conf)},
    )
    settings = Settings(
        data_dir=data_dir,
        workload=WorkloadSettings(kind="command", command_file=commands),
        providers={"cpu": pool},
        autoscaler=AutoscalerSettings(launch_cooldown_s=0),
    )
    with App(settings) as app:
        scaler = Autoscaler(app.fleet, settings.autoscaler, jobs.profile_job_types, requeue=app.queue.requeue_node)
        try:
            queued = [app.queue.enqueue(jobs.SELFPLAY, "ringrift_2p", {"games": 2}) for _ in range(3)]
            assert scaler.run_once()[0].launch == 1
            assert [outcome.error for outcome in scaler.collect(timeout_s=30)] == [None]

            def done() -> bool:
                scaler.run_once()
                return all(app.queue.get(job.id).status is JobStatus.COMPLETED for job in queued)

            assert wait_until(done, 60, interval_s=0.5), (app.nodes.list_nodes(), slurm_cluster.logs())
            (node,) = app.nodes.list_nodes()
            assert {app.queue.get(job.id).lease_node for job in queued} == {node["id"]}
            idle = IdleShutdown(
                app.store,
                app.bus,
                app.nodes,
                IdleSettings(),
                terminate=lambda target, reason: app.fleet.terminate(target.id, reason=reason),
                pools=settings.providers,
            )

            def ended() -> bool:
                idle.run_once()
                scaler.run_once()
                return app.nodes.list_nodes()[0]["status"] == "terminated"

            assert wait_until(ended, 60, interval_s=0.5), (app.nodes.list_nodes(), slurm_cluster.logs())
            # scancel ended the Slurm job: once its worker has drained, Slurm no longer lists it.
            assert wait_until(lambda: node["provider_id"] not in slurm_cluster.jobs(), 30), slurm_cluster.jobs()
        finally:
            scaler.close()
            for machine in app.fleet.provider("cpu").machines():
                app.fleet.provider("cpu").terminate(machine.provider_id)


def test_a_partition_that_does_not_exist_is_one_line_at_the_command_line(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    import os
    import subprocess

    (tmp_path / "zeroloop.toml").write_text(
        f'data_dir = "{tmp_path / "data"}"\n[providers.gpu]\nkind = "slurm"\n'
        f'[providers.gpu.options]\npartition = "nope"\nslurm_conf = "{slurm_cluster.conf}"\n'
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("ZEROLOOP_")}
    env["COLUMNS"] = "300"
    done = subprocess.run(
        [sys.executable, "-m", "zeroloop", "nodes", "launch", "--provider", "gpu"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    (error,) = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert "partition 'nope' does not exist (sinfo knows: debug, zl)" in error
    assert slurm_cluster.jobs() == []  # nothing launched
