"""The same worker tests over both paths: the worker's parts over the store, and over `zeroloop serve`.

Each test runs twice: `direct` hands the worker the store-backed App; `server` hands it a
RemoteApp talking HTTP to a real server over the same store. The outcome in the store
must be the same.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.helpers import FakeClock, run_async
from tests.server.conftest import register_node, running_server
from zeroloop.app import App
from zeroloop.artifacts.transfer import ArtifactKind
from zeroloop.cluster.agent import NodeAgent
from zeroloop.cluster.nodes import NodeInfo, NodeStatus
from zeroloop.config import ClusterSettings, ServerSettings, Settings, StoreSettings, WorkloadSettings
from zeroloop.control.tokens import Role, Tokens
from zeroloop.errors import StaleLeaseError
from zeroloop.pipeline import jobs
from zeroloop.pipeline.executor import JobExecutor
from zeroloop.queue.jobs import JobStatus
from zeroloop.remote.app import RemoteApp
from zeroloop.store.queries import artifacts as artifact_queries
from zeroloop.store.queries import daemons as daemon_queries
from zeroloop.store.schema import events

SELFPLAY = """
import sys, numpy as np
out, games = sys.argv[1], int(sys.argv[2])
np.savez(out, num_games=np.asarray(games), obs=np.zeros((games * 5, 3)))
"""
BROKEN = """
import sys
print("engine crashed", file=sys.stderr)
sys.exit(3)
"""


@dataclass
class Cluster:
    """The store-side App (what a coordinator sees) and the worker's parts on the path under test."""

    app: App
    worker: Any  # App or RemoteApp: the same attributes, each a port of zeroloop.ports
    path: str

    def executor(self) -> JobExecutor:
        """A job executor for node w1 over the worker's parts."""
        w = self.worker
        return JobExecutor(w.models, w.bus, w.queue, w.artifacts, w.settings, node="w1")

    def events(self) -> list[tuple[str, dict[str, Any], str]]:
        """Every event in the log: type, payload, node."""
        with self.app.store.read() as conn:
            rows = conn.execute(sa.select(events.c.type, events.c.payload, events.c.node).order_by(events.c.id))
            return [(kind, payload, node) for kind, payload, node in rows]


def _command_app(store_url: str, tmp_path: Path, script: str) -> App:
    code = tmp_path / "selfplay.py"
    code.write_text(script)
    commands = tmp_path / "commands.toml"
    commands.write_text(f'[selfplay]\ncommand = "{sys.executable} {code} {{output}} {{games}}"\n')
    settings = Settings(
        data_dir=tmp_path / "data",
        store=StoreSettings(url=store_url),
        cluster=ClusterSettings(node_id="w1"),
        workload=WorkloadSettings(kind="command", command_file=commands),
    )
    return App(settings, upgrade=False)


def _cluster(path: str, store_url: str, tmp_path: Path, script: str) -> Iterator[Cluster]:
    with _command_app(store_url, tmp_path, script) as app:
        register_node(app, "w1")  # as its agent would at start: behind the server, a node claims only then
        if path == "direct":
            yield Cluster(app, app, path)
            return
        token, _ = Tokens(app.store).create(Role.WORKER, node="w1")
        with running_server(app) as url:
            settings = Settings(
                data_dir=tmp_path / "worker",
                cluster=ClusterSettings(node_id="w1"),
                server=ServerSettings(url=url, token=token, retry_attempts=2, retry_initial_s=0.01),
            )
            with RemoteApp(settings) as remote:
                yield Cluster(app, remote, path)


@pytest.fixture(params=["direct", "server"])
def path(request: pytest.FixtureRequest) -> str:
    """Each test using this runs over the store and over the server."""
    return str(request.param)


@pytest.fixture
def cluster(path: str, store_url: str, tmp_path: Path, settings: Settings) -> Iterator[Cluster]:
    """A command-workload App and a worker on the path under test."""
    yield from _cluster(path, store_url, tmp_path, SELFPLAY)


@pytest.fixture
def broken(path: str, store_url: str, tmp_path: Path, settings: Settings) -> Iterator[Cluster]:
    """The same, with a selfplay command that crashes."""
    yield from _cluster(path, store_url, tmp_path, BROKEN)


def test_a_selfplay_job_is_uploaded_then_completed_and_announced(cluster: Cluster) -> None:
    job = cluster.app.queue.enqueue(jobs.SELFPLAY, "ringrift_2p", {"games": 4})
    executor = cluster.executor()
    try:
        assert asyncio.run(executor.run_once())
        assert not asyncio.run(executor.run_once())
    finally:
        executor.close()
    done = cluster.app.queue.get(job.id)
    assert done.status is JobStatus.COMPLETED and done.lease_node == "w1"
    sha = done.result["artifact_sha256"]
    with cluster.app.store.read() as conn:
        artifact = artifact_queries.get_artifact(conn, sha)
    assert artifact is not None and artifact["producer_job_id"] == job.id and artifact["meta"]["samples"] == 20
    announced = [(payload, node) for kind, payload, node in cluster.events() if kind == "SELFPLAY_COMPLETE"]
    assert announced == [
        (
            {"config_key": "ringrift_2p", "job_id": job.id, "artifact_sha256": sha, "games": 4, "samples": 20,
             "model_id": None},
            "w1",
        )
    ]  # fmt: skip
    assert cluster.worker.artifacts.fetch(sha).stat().st_size == artifact["size_bytes"]


def test_a_failing_command_fails_the_attempt_with_its_output(broken: Cluster) -> None:
    job = broken.app.queue.enqueue(jobs.SELFPLAY, "ringrift_2p", {"games": 4}, max_attempts=1)
    executor = broken.executor()
    try:
        assert asyncio.run(executor.run_once())
    finally:
        executor.close()
    dead = broken.app.queue.get(job.id)
    assert dead.status is JobStatus.DEAD
    assert dead.error is not None and "exited with status 3" in dead.error and "engine crashed" in dead.error


def test_run_reports_a_job_and_leases_the_next_with_it(cluster: Cluster) -> None:
    first = cluster.app.queue.enqueue(jobs.SELFPLAY, "ringrift_2p", {"games": 2})
    second = cluster.app.queue.enqueue(jobs.SELFPLAY, "ringrift_2p", {"games": 3})
    executor = cluster.executor()
    complete_and_claim = cluster.worker.queue.complete_and_claim

    def then_stop(*args: Any, **kwargs: Any) -> Any:
        outcome = complete_and_claim(*args, **kwargs)
        executor.stop()  # the lease taken with this result must still be run
        return outcome

    cluster.worker.queue.complete_and_claim = then_stop
    asyncio.run(asyncio.wait_for(executor.run(idle_wait_s=0.05), timeout=120))
    assert [cluster.app.queue.get(job.id).status for job in (first, second)] == [JobStatus.COMPLETED] * 2
    kinds = [
        (kind, payload["job_id"])
        for kind, payload, _node in cluster.events()
        if kind not in ("JOB_QUEUED", "NODE_REGISTERED")
    ]
    assert kinds == [
        ("JOB_CLAIMED", first.id),
        ("SELFPLAY_COMPLETE", first.id),
        ("JOB_COMPLETED", first.id),
        ("JOB_CLAIMED", second.id),
        ("SELFPLAY_COMPLETE", second.id),
        ("JOB_COMPLETED", second.id),
    ]


def test_a_lease_taken_away_refuses_heartbeat_and_result_alike(cluster: Cluster) -> None:
    job = cluster.app.queue.enqueue(jobs.SELFPLAY, "ringrift_2p", {"games": 2})
    lease = cluster.worker.queue.claim("w1", types=[jobs.SELFPLAY])
    assert lease is not None and lease.job.id == job.id
    assert cluster.worker.queue.heartbeat(job.id, lease.token) > lease.expires_at - 1
    cluster.app.queue.cancel(job.id)
    with pytest.raises(StaleLeaseError, match="cancelled, not running"):
        cluster.worker.queue.heartbeat(job.id, lease.token)
    outcome = ("SELFPLAY_COMPLETE", {"config_key": "ringrift_2p", "job_id": job.id, "artifact_sha256": "0" * 64,
               "games": 2, "samples": 1}, f"SELFPLAY_COMPLETE:{job.id}")  # fmt: skip
    with pytest.raises(StaleLeaseError):
        cluster.worker.queue.complete(job.id, lease.token, {"x": 1}, event=outcome)
    with pytest.raises(StaleLeaseError):
        cluster.worker.queue.fail(job.id, lease.token, "late")
    assert cluster.app.queue.get(job.id).status is JobStatus.CANCELLED
    assert "SELFPLAY_COMPLETE" not in [kind for kind, _payload, _node in cluster.events()]


def test_a_draining_worker_gives_its_job_back_uncounted(cluster: Cluster) -> None:
    job = cluster.app.queue.enqueue(jobs.SELFPLAY, "ringrift_2p", {"games": 2})
    lease = cluster.worker.queue.claim("w1", types=[jobs.SELFPLAY])
    assert lease is not None
    released = cluster.worker.queue.release(job.id, lease.token, "worker w1 stopped")
    assert (released.status, released.attempts) == (JobStatus.QUEUED, 0)
    with pytest.raises(StaleLeaseError):  # given back: that lease is over
        cluster.worker.queue.release(job.id, lease.token, "again")


def _info() -> NodeInfo:
    return NodeInfo(id="w1", host="h", provider="manual", cpu_count=2, memory_bytes=2**30, disk_bytes=2**34)


@run_async
async def test_the_agent_registers_heartbeats_reregisters_and_leaves(cluster: Cluster) -> None:
    clock = FakeClock()
    agent = NodeAgent(cluster.worker.nodes, _info, lambda: {"cpu_pct": 12.5}, 10, clock=clock)
    await agent.run_once()
    await agent.run_once()
    node = cluster.app.nodes.get("w1")
    assert node is not None and node["status"] == "active" and node["utilisation"] == {"cpu_pct": 12.5}
    assert agent.registrations == 1
    cluster.app.nodes.set_status("w1", NodeStatus.LOST)
    await agent.run_once()
    assert agent.registrations == 2
    stop = asyncio.Event()
    stop.set()
    await agent.run(stop)
    node = cluster.app.nodes.get("w1")
    assert node is not None and node["status"] == "terminated"


def test_daemon_records_and_crash_loops_reach_the_store(cluster: Cluster) -> None:
    row = {"node": "w1", "name": "job_executor", "state": "failed", "restarts": 5, "last_error": "boom",
           "health": {"state": None}, "started_at": 1.0, "updated_at": 2.0}  # fmt: skip
    loop = {"node": "w1", "daemon": "job_executor", "restarts": 5, "last_error": "boom"}
    cluster.worker.daemon_records.write([row], [loop])
    with cluster.app.store.read() as conn:
        assert daemon_queries.list_daemons(conn, "w1") == [row]
    logged = [(kind, payload) for kind, payload, _node in cluster.events() if kind != "NODE_REGISTERED"]
    assert logged == [("DAEMON_CRASH_LOOP", loop)]


def test_a_corrupt_cached_copy_is_fetched_again_and_verified(cluster: Cluster, tmp_path: Path) -> None:
    source = tmp_path / "batch.bin"
    source.write_bytes(b"positions" * 5000)
    job = cluster.app.queue.enqueue(jobs.SELFPLAY, "ringrift_2p", {"games": 1})
    assert cluster.worker.queue.claim("w1") is not None  # behind the server, only a held job's output is uploaded
    artifact = cluster.worker.artifacts.put(
        source, ArtifactKind.GAME_BATCH, config_key="ringrift_2p", producer_job_id=job.id
    )
    cached = cluster.worker.artifacts.fetch(artifact.sha256)
    cached.write_bytes(b"flipped bits")
    again = cluster.worker.artifacts.fetch(artifact.sha256)
    assert again.read_bytes() == source.read_bytes()
