"""Benchmark of the fleet at scale, by simulation: 10, 100, 1,000 worker nodes against one coordinator.

For each fleet size N, on a fresh PostgreSQL database:

- a real `zeroloop coordinator` process runs with two provider pools of a simulated
  provider (`bench.fleet:SimProvider`, kind by `module:Class` as a user's own would be):
  `direct` (the workers reach the store) and `served` (through `zeroloop serve`, a token
  per node, made by the fleet at launch), with min_nodes = max_nodes, so its autoscaler
  launches the whole fleet; a real `zeroloop serve` process serves the `served` pool and
  the dashboard;
- the simulated provider "launches" a machine by writing a spool file; a few simulator
  processes start one simulated worker per file: it registers, heartbeats every
  `cluster.heartbeat_interval_s`, and claims no-op selfplay jobs, holding each for a
  duration drawn from `--job-s` (heartbeating its lease meanwhile) before completing it
  and claiming the next in one call (`complete_and_claim`), exactly the calls a real
  worker makes (JobQueue and Nodes on the store; RemoteQueue and RemoteNodes through the
  server). Blocking calls run on a thread pool per simulator process;
- the benchmark keeps about 2N jobs queued;
- over a window of `--window-s` seconds, once every node is active, it measures: the
  coordinator's CPU (cores, psutil), claim latency p50/p99 (each call that leases a job,
  timed in the thread that makes it), heartbeat writes per second (node and lease
  heartbeats), the autoscaler's, node-lost detector's and health monitor's tick durations
  (their `tick_s`/`max_tick_s`, from the coordinator's daemon records) against their
  intervals, the dashboard's page times, and node-lost detection: 2% of the nodes vanish
  at the start of the window (half their machine gone, which the provider reports; half
  silent, found by missed heartbeats);
- targets at 1,000 nodes: the coordinator below one core, claim p99 below ten times its
  10-node value, no tick longer than its interval.

    scripts/with-postgres .venv/bin/python -m bench.fleet [--sizes 10,100,1000] [--window-s 60] [--job-s 5:15]
        [--served 0.5] [--simulators 4] [--threads 48] [--server-processes 2]

It needs a PostgreSQL server (ZEROLOOP_TEST_POSTGRES_URL, as scripts/with-postgres sets);
each size gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import make_url

from zeroloop.cluster.nodes import NodeInfo, Nodes, NodeStatus
from zeroloop.config import PoolSettings, ServerSettings, Settings
from zeroloop.control.tokens import Role, Tokens
from zeroloop.errors import StaleLeaseError
from zeroloop.events.bus import EventBus
from zeroloop.fleet.providers.base import Launched, LaunchSpec, Machine, MachineState, Provider
from zeroloop.queue.manager import JobQueue
from zeroloop.remote.client import ServerClient
from zeroloop.remote.parts import RemoteNodes, RemoteQueue
from zeroloop.store import migrate
from zeroloop.store.database import Store
from zeroloop.store.queries import daemons as daemon_queries
from zeroloop.store.queries import nodes as node_queries

ROOT = Path(__file__).resolve().parents[1]
HEARTBEAT_S = 10.0  # cluster.heartbeat_interval_s: the default
NODE_LOST_S = 30.0  # cluster.node_lost_after_s: three missed heartbeats
LEASE_S = 60.0  # queue.lease_s: the default; a lease is heartbeated every third of it
AUTOSCALER_S = 10.0  # autoscaler.interval_s: the default
JOB_TYPE = "selfplay"
VANISH_SHARE = 0.02
POLL_S = 1.0  # how often simulators and the benchmark look at the spool and the store


# --- the simulated provider (loaded by the coordinator from `kind = "bench.fleet:SimProvider"`) -------


class SimOptions(BaseModel):
    """Where the simulated machines' spool files go."""

    model_config = {"extra": "forbid"}
    spool: Path


class SimProvider(Provider):
    """A provider whose machines are spool files that the simulator processes turn into simulated workers."""

    kind = "sim"
    Options = SimOptions

    def launch(self, spec: LaunchSpec) -> Launched:
        """Write the machine's spool file (its node id, pool and the worker's server token, if any)."""
        spool: Path = self.options.spool
        env = {key: value for key, value in spec.env.items() if key.startswith("ZEROLOOP_SERVER__")}
        temp = spool / f".{spec.node_id}.tmp"
        temp.write_text(json.dumps({"node": spec.node_id, "pool": self.name, "env": env}))
        temp.rename(spool / f"{spec.node_id}.json")
        return Launched(provider_id=spec.node_id, host="sim")

    def terminate(self, provider_id: str) -> None:
        """Remove the machine; its simulated worker leaves."""
        (self.options.spool / f"{provider_id}.json").unlink(missing_ok=True)

    def machines(self) -> list[Machine]:
        """The spool files of this pool (a node id starts with its pool's name: `<pool>-<hex>`), by name only."""
        return [
            Machine(path.stem, MachineState.RUNNING, path.stem)
            for path in self.options.spool.glob(f"{self.name}-*.json")
        ]


# --- the simulator processes ----------------------------------------------------------------


@dataclass
class SimNode:
    """One simulated worker: its parts (direct or through the server) and what it measured."""

    id: str
    nodes: Any
    queue: Any
    stop: bool = False
    vanished: bool = False
    info: NodeInfo | None = None


@dataclass
class Record:
    """What one simulator process measured (epoch seconds; latencies in seconds)."""

    claims: list[tuple[float, float]] = field(default_factory=list)  # (when, latency)
    beats: list[float] = field(default_factory=list)  # when each heartbeat write went through
    errors: list[str] = field(default_factory=list)
    vanished: dict[str, float] = field(default_factory=dict)  # node -> when it stopped


class Simulator:
    """Runs the simulated workers of its shard of the spool until told to stop."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.spool = Path(config["spool"])
        self.shard, self.shards = config["shard"], config["shards"]
        self.threads = ThreadPoolExecutor(max_workers=config["threads"], thread_name_prefix="sim")
        self.settings = Settings(
            data_dir=Path(config["data_dir"]),
            store={"url": config["store"], "pool_size": config["pool_size"]},
            queue={"lease_s": LEASE_S, "soft_limit": 10**6, "hard_limit": 10**6 + 1},
        )
        self.store = Store(config["store"], self.settings.store)
        bus = EventBus(self.store, node=f"sim-{self.shard}", source="bench")
        self.direct_nodes = Nodes(self.store, bus)
        self.direct_queue = JobQueue(self.store, bus, self.settings)
        self.record = Record()
        self.running: dict[str, SimNode] = {}
        self.low, self.high = config["job_s"]

    def mine(self, node: str) -> bool:
        return zlib.crc32(node.encode()) % self.shards == self.shard

    async def call(self, fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
        """Run a blocking call on the pool; its result and how long it took in its thread (seconds)."""

        def timed() -> tuple[Any, float]:
            began = time.perf_counter()
            result = fn(*args, **kwargs)
            return result, time.perf_counter() - began

        return await asyncio.get_running_loop().run_in_executor(self.threads, timed)

    async def run(self) -> None:
        tasks: list[asyncio.Task[None]] = []
        while not (self.spool / "STOP").exists():
            for path in self.spool.glob("*.json"):
                node = path.stem
                if node in self.running or not self.mine(node):
                    continue
                tasks.append(asyncio.create_task(self.node(node, json.loads(path.read_text()))))
            for node, sim in self.running.items():
                if not sim.vanished and (self.spool / f"{node}.vanish").exists():
                    sim.vanished = sim.stop = True
                    self.record.vanished[node] = time.time()
                elif not (self.spool / f"{node}.json").exists():
                    sim.stop = True  # terminated by the fleet: leave
            await asyncio.sleep(POLL_S)  # the simulator's own look at the spool, not a wait for a result
        for sim in self.running.values():
            sim.stop = True
        await asyncio.gather(*tasks, return_exceptions=True)

    async def node(self, node: str, spec: dict[str, Any]) -> None:
        env = spec["env"]
        if env:
            server = ServerSettings(
                url=env["ZEROLOOP_SERVER__URL"], token=env["ZEROLOOP_SERVER__TOKEN"], retry_attempts=3
            )
            client = ServerClient(server, node)
            sim = SimNode(node, RemoteNodes(client), RemoteQueue(client))
        else:
            sim = SimNode(node, self.direct_nodes, self.direct_queue)
        self.running[node] = sim
        info = sim.info = NodeInfo(node, "sim", "sim", 1, 2**30, 2**36, pool=spec["pool"], slots=1)
        try:
            while True:  # as a worker's agent does: register again at its next beat until the cluster answers
                try:
                    await self.call(sim.nodes.register, info, {})
                    break
                except Exception as exc:
                    if sim.stop:
                        raise
                    self.record.errors.append(f"{node}: registering: {type(exc).__name__}"[:300])
                    await self._pause(sim, HEARTBEAT_S)
            beats = asyncio.create_task(self.heartbeats(sim))
            await self.work(sim)
            await beats
            if not sim.vanished:
                await self.call(sim.nodes.leave, node)
        except Exception as exc:
            self.record.errors.append(f"{node}: {type(exc).__name__}: {exc}"[:300])

    async def heartbeats(self, sim: SimNode) -> None:
        await asyncio.sleep(random.uniform(0, HEARTBEAT_S))  # spread the fleet's beats over the interval
        while not sim.stop:
            status, _ = await self.call(sim.nodes.heartbeat, sim.id, {"cpu_pct": 50.0})
            self.record.beats.append(time.time())
            if status is NodeStatus.TERMINATING:
                sim.stop = True
            elif status in (None, NodeStatus.LOST):  # found lost (a late beat on a loaded machine): as the agent does
                self.record.errors.append(f"{sim.id}: was {status}, registered again")
                await self.call(sim.nodes.register, sim.info, {})
            await self._pause(sim, HEARTBEAT_S)

    async def work(self, sim: SimNode) -> None:
        lease = None
        while not sim.stop:
            if lease is None:
                lease, took = await self.call(sim.queue.claim, sim.id, None, [JOB_TYPE])
                self.record.claims.append((time.time(), took))
                if lease is None:
                    await self._pause(sim, 0.5)  # the executor's idle wait
                    continue
            ends = time.monotonic() + random.uniform(self.low, self.high)  # the job "runs"
            try:
                while not sim.stop and time.monotonic() < ends:
                    await self._pause(sim, min(LEASE_S / 3, ends - time.monotonic()))
                    if not sim.stop and time.monotonic() < ends:
                        await self.call(sim.queue.heartbeat, lease.job.id, lease.token)
                        self.record.beats.append(time.time())
                if sim.stop:
                    return  # vanished or told to stop mid-job: its lease expires or its node is found lost
                done_and_next, took = await self.call(
                    sim.queue.complete_and_claim, lease.job.id, lease.token, {}, node=sim.id, types=[JOB_TYPE]
                )
            except StaleLeaseError as exc:  # the lease moved on (the node was found lost meanwhile): drop it
                self.record.errors.append(f"{sim.id}: StaleLeaseError: {exc}"[:300])
                lease = None
                continue
            lease = done_and_next[1]
            self.record.claims.append((time.time(), took))

    @staticmethod
    async def _pause(sim: SimNode, seconds: float) -> None:
        """Sleep `seconds` (the simulated work or interval), ending early once the node is stopped."""
        end = time.monotonic() + max(0.0, seconds)
        while not sim.stop and time.monotonic() < end:
            await asyncio.sleep(min(0.5, end - time.monotonic()))


def simulate(config_path: str) -> None:
    """The simulator process: run its workers, then write what it measured next to its config."""
    config = json.loads(Path(config_path).read_text())
    sim = Simulator(config)
    asyncio.run(sim.run())
    out = Path(config["out"])
    out.write_text(json.dumps(sim.record.__dict__))
    sim.store.close()


# --- the benchmark --------------------------------------------------------------------------


def _admin(sql: str) -> None:
    engine = sa.create_engine(make_url(os.environ["ZEROLOOP_TEST_POSTGRES_URL"]).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(sql)
    finally:
        engine.dispose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tick_details(store: Store) -> dict[str, dict[str, Any]]:
    """The coordinator's daemons' health details (their `tick_s`, `max_tick_s`), as its manager last wrote them."""
    with store.read() as conn:
        rows = daemon_queries.list_daemons(conn, "coordinator")
    return {row["name"]: ((row["health"] or {}).get("details") or {}) for row in rows}


def _wait_ready(base: str, server: subprocess.Popen[bytes]) -> None:
    """Return once `zeroloop serve` answers /readyz (at most 60 s)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.2)  # polling the server's readiness, bounded above
    raise SystemExit("zeroloop serve did not become ready within 60 s; see server.log")


def _cpu_s(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def _postmaster(store: Store) -> psutil.Process | None:
    """The postmaster of the benchmark's PostgreSQL (the parent of a backend of ours), if it runs on this machine."""
    with store.read() as conn:
        backend = int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
    try:
        return psutil.Process(backend).parent()
    except psutil.Error:
        return None  # the server runs elsewhere


def _postgres_cpu_s(postmaster: psutil.Process | None) -> float:
    """CPU seconds of that PostgreSQL: the postmaster, its live backends, and those already gone (reaped)."""
    if postmaster is None:
        return 0.0
    try:
        times = postmaster.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        return total + _cpu_s(postmaster.children())
    except psutil.Error:
        return 0.0


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _pct(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * (len(ordered) - 1)))] if ordered else float("nan")


@dataclass
class Figures:
    """One fleet size's figures."""

    nodes: int
    coordinator_cores: float = 0.0
    server_cores: float = 0.0
    postgres_cores: float = 0.0
    machine_busy: float = 0.0  # share of all the machine's CPUs busy in the window (the simulators included)
    load: float = 0.0  # the machine's one-minute load average at the end of the window
    claim_p50_ms: float = 0.0
    claim_p99_ms: float = 0.0
    claims_per_s: float = 0.0
    beats_per_s: float = 0.0
    # daemon -> (longest tick seen in the window, longest since it started, its interval), seconds
    ticks: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    lost_gone_s: list[float] = field(default_factory=list)
    lost_silent_s: list[float] = field(default_factory=list)
    dashboard_ms: dict[str, tuple[float, float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    window: tuple[float, float] = (0.0, 0.0)  # epoch seconds


def run_size(n: int, args: argparse.Namespace) -> Figures:
    """Start a coordinator, a server and the simulators for `n` nodes; measure one window; tear down."""
    database = f"zeroloop_fleet_{n}_{uuid.uuid4().hex[:6]}"
    _admin(f"CREATE DATABASE {database}")
    url = make_url(os.environ["ZEROLOOP_TEST_POSTGRES_URL"]).set(database=database).render_as_string(False)
    work = Path(tempfile.mkdtemp(prefix=f"zeroloop-fleet-{n}-"))
    spool = work / "spool"
    spool.mkdir()
    figures = Figures(n)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with Store(url) as store:
            migrate.upgrade(store)
            admin = Tokens(store).create(Role.ADMIN)[0]
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        served = round(n * args.served)
        pools = {
            name: PoolSettings(
                kind="bench.fleet:SimProvider",
                profile="selfplay",
                min_nodes=count,
                max_nodes=count,
                scale_down=False,
                launch_timeout_s=600,
                options={"spool": str(spool)},
                **({"server_url": base} if name == "served" else {}),
            ).model_dump(mode="json", exclude_defaults=True)
            for name, count in (("direct", n - served), ("served", served))
            if count
        }
        env = {key: value for key, value in os.environ.items() if not key.startswith("ZEROLOOP_")}
        env.update(
            {
                "PYTHONPATH": str(ROOT),
                "ZEROLOOP_STORE__URL": url,
                "ZEROLOOP_DATA_DIR": str(work / "coordinator"),
                "ZEROLOOP_LOG_LEVEL": "WARNING",
                "ZEROLOOP_CLUSTER__NODE_ID": "coordinator",
                "ZEROLOOP_CLUSTER__HEARTBEAT_INTERVAL_S": str(HEARTBEAT_S),
                "ZEROLOOP_CLUSTER__NODE_LOST_AFTER_S": str(NODE_LOST_S),
                "ZEROLOOP_QUEUE__SOFT_LIMIT": str(10**6),
                "ZEROLOOP_QUEUE__HARD_LIMIT": str(10**6 + 1),
                "ZEROLOOP_AUTOSCALER__LAUNCH_COOLDOWN_S": "0",
                "ZEROLOOP_AUTOSCALER__MAX_LAUNCHES_PER_TICK": str(max(4, n)),
                "ZEROLOOP_PROVIDERS": json.dumps(pools),
            }
        )
        log = (work / "coordinator.log").open("wb")
        coordinator = subprocess.Popen(
            [sys.executable, "-m", "zeroloop", "coordinator"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        processes.append(coordinator)
        server_env = {**env, "ZEROLOOP_DATA_DIR": str(work / "server"), "ZEROLOOP_CLUSTER__NODE_ID": "server"}
        server = subprocess.Popen(
            [sys.executable, "-m", "zeroloop", "serve", "--port", str(port), "--processes", str(args.server_processes)],
            env=server_env,
            stdout=subprocess.DEVNULL,
            stderr=(work / "server.log").open("wb"),
        )
        processes.append(server)
        _wait_ready(base, server)
        simulators = []
        for shard in range(args.simulators):
            config = {
                "spool": str(spool),
                "shard": shard,
                "shards": args.simulators,
                "threads": args.threads,
                "store": url,
                "pool_size": args.pool_size,
                "data_dir": str(work / f"sim-{shard}"),
                "job_s": args.job_s,
                "out": str(work / f"sim-{shard}.out.json"),
            }
            path = work / f"sim-{shard}.json"
            path.write_text(json.dumps(config))
            sim = subprocess.Popen(
                [sys.executable, "-m", "bench.fleet", "simulate", str(path)],
                env={**env, "ZEROLOOP_LOG_LEVEL": "ERROR"},
                stdout=subprocess.DEVNULL,
                stderr=(work / f"sim-{shard}.log").open("wb"),
            )
            processes.append(sim)
            simulators.append(sim)
        measure(n, url, base, admin, spool, coordinator, server, args, figures)
        (spool / "STOP").touch()
        for sim in simulators:
            sim.wait(timeout=120)
        collect(figures, [work / f"sim-{shard}.out.json" for shard in range(args.simulators)])
    finally:
        (spool / "STOP").touch()
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        _admin(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    return figures


def measure(
    n: int,
    url: str,
    base: str,
    admin: str,
    spool: Path,
    coordinator: subprocess.Popen[bytes],
    server: subprocess.Popen[bytes],
    args: argparse.Namespace,
    figures: Figures,
) -> None:
    """Fill the queue, wait (bounded) for the whole fleet, then measure one window."""
    settings = Settings(data_dir=spool.parent / "bench", queue={"soft_limit": 10**6, "hard_limit": 10**6 + 1})
    with Store(url) as store:
        queue = JobQueue(store, EventBus(store, node="bench", source="bench"), settings)
        nodes = Nodes(store, EventBus(store, node="bench", source="bench"))

        def top_up() -> None:
            queued = queue.stats().get(JOB_TYPE, {}).get("queued", 0)
            if queued < 2 * n:
                queue.enqueue_many(
                    [{"job_type": JOB_TYPE, "config_key": "bench_2p", "payload": {}} for _ in range(2 * n - queued)]
                )

        top_up()
        began = time.monotonic()
        while time.monotonic() - began < args.ramp_s:
            active = len(nodes.list_nodes((NodeStatus.ACTIVE,)))
            if active >= n:
                break
            if coordinator.poll() is not None:
                raise SystemExit(f"the coordinator exited ({coordinator.returncode}); see its log")
            top_up()
            time.sleep(POLL_S)  # polling the store for the fleet to come up, bounded by --ramp-s
        active = len(nodes.list_nodes((NodeStatus.ACTIVE,)))
        figures.notes.append(f"{active} of {n} nodes active after {time.monotonic() - began:.0f} s of launching")
        # The window.
        candidates = sorted(row["id"] for row in nodes.list_nodes((NodeStatus.ACTIVE,)))
        vanishing = random.sample(candidates, min(len(candidates), max(2, round(VANISH_SHARE * n))))
        gone, silent = vanishing[: len(vanishing) // 2], vanishing[len(vanishing) // 2 :]
        watched = {"coordinator": _tree(coordinator.pid), "server": _tree(server.pid)}
        postmaster = _postmaster(store)
        cpu = {name: _cpu_s(procs) for name, procs in watched.items()} | {"postgres": _postgres_cpu_s(postmaster)}
        machine = psutil.cpu_times()
        start_wall, start = time.time(), time.monotonic()
        vanished_at = time.time()
        for node in gone:  # the machine is gone: the provider stops listing it
            (spool / f"{node}.vanish").touch()
            (spool / f"{node}.json").unlink(missing_ok=True)
        for node in silent:  # the worker stops answering; the provider still lists the machine
            (spool / f"{node}.vanish").touch()
        pages: dict[str, list[float]] = {"/dashboard": [], "/dashboard/nodes": []}
        intervals = {"autoscaler": AUTOSCALER_S, "node_lost": HEARTBEAT_S, "health_monitor": 10.0}
        sampled: dict[str, list[float]] = {name: [] for name in intervals}
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {admin}"}, timeout=60) as client:
            while time.monotonic() - start < args.window_s:
                top_up()
                for name, details in _tick_details(store).items():
                    if name in sampled and "tick_s" in details:
                        sampled[name].append(float(details["tick_s"]))
                for page, times in pages.items():
                    t0 = time.perf_counter()
                    answer = client.get(page)
                    times.append(time.perf_counter() - t0)
                    if answer.status_code != 200:
                        figures.errors.append(f"GET {page}: {answer.status_code}")
                time.sleep(POLL_S * 4)  # the window's pace: one look at the dashboard every few seconds
        window = time.monotonic() - start
        end_wall = time.time()
        cpu = {name: (_cpu_s(procs) - cpu[name]) / window for name, procs in watched.items()} | {
            "postgres": (_postgres_cpu_s(postmaster) - cpu["postgres"]) / window
        }
        figures.coordinator_cores, figures.server_cores = cpu["coordinator"], cpu["server"]
        figures.postgres_cores = cpu["postgres"]
        after = psutil.cpu_times()
        busy = sum(after) - after.idle - after.iowait - (sum(machine) - machine.idle - machine.iowait)
        figures.machine_busy = busy / max(1e-9, sum(after) - sum(machine))
        figures.load = os.getloadavg()[0]
        figures.dashboard_ms = {page: (1000 * statistics.median(t), 1000 * max(t)) for page, t in pages.items() if t}
        # Node-lost detection: when each vanished node's row turned lost.
        deadline = time.monotonic() + NODE_LOST_S * 3
        while time.monotonic() < deadline:
            with store.read() as conn:
                rows = {node: node_queries.get_node(conn, node) for node in vanishing}
            if all(row is not None and row["status"] in ("lost", "terminated") for row in rows.values()):
                break
            time.sleep(POLL_S)  # polling the store, bounded above
        for node, row in rows.items():
            if row is None or row["status"] not in ("lost", "terminated"):
                figures.errors.append(f"vanished node {node} never found lost (still {row and row['status']})")
                continue
            detected = row["status_changed_at"] - vanished_at
            (figures.lost_gone_s if node in gone else figures.lost_silent_s).append(detected)
        lifetime = _tick_details(store)
        for name, interval in intervals.items():
            if sampled[name]:
                longest_ever = float(lifetime.get(name, {}).get("max_tick_s", 0.0))
                figures.ticks[name] = (max(sampled[name]), longest_ever, interval)
    figures.notes.append(f"window {window:.0f} s")
    figures.window = (start_wall, end_wall)


def collect(figures: Figures, outputs: list[Path]) -> None:
    """Fold the simulators' measurements inside the window into the figures."""
    start, end = figures.window
    latencies: list[float] = []
    beats = 0
    for out in outputs:
        if not out.exists():
            figures.errors.append(f"simulator output {out.name} missing (it crashed: see its log)")
            continue
        record = json.loads(out.read_text())
        latencies += [took for at, took in record["claims"] if start <= at <= end]
        beats += sum(1 for at in record["beats"] if start <= at <= end)
        figures.errors += record["errors"]
    span = max(1e-9, end - start)
    figures.claims_per_s = len(latencies) / span
    figures.beats_per_s = beats / span
    figures.claim_p50_ms = 1000 * _pct(latencies, 0.5)
    figures.claim_p99_ms = 1000 * _pct(latencies, 0.99)


def report(figures: Figures) -> None:
    """Print one fleet size's figures."""
    print(f"\n{figures.nodes} nodes ({'; '.join(figures.notes)})")
    print(
        f"  CPU (cores): coordinator {figures.coordinator_cores:.2f}, server {figures.server_cores:.2f}, "
        f"PostgreSQL {figures.postgres_cores:.2f}; the machine {figures.machine_busy:.0%} busy (simulators and "
        f"anything else running included; load average {figures.load:.1f})"
    )
    print(
        f"  claims: {figures.claims_per_s:.1f}/s, latency p50 {figures.claim_p50_ms:.1f} ms, "
        f"p99 {figures.claim_p99_ms:.1f} ms"
    )
    print(f"  heartbeat writes: {figures.beats_per_s:.1f}/s (node and lease heartbeats)")
    for name, (window, ever, interval) in sorted(figures.ticks.items()):
        print(
            f"  {name} tick: longest in the window {1000 * window:.0f} ms, since start {1000 * ever:.0f} ms "
            f"(interval {interval:g} s)"
        )
    for what, values in (("machine gone", figures.lost_gone_s), ("silent", figures.lost_silent_s)):
        if values:
            print(f"  node-lost detection ({what}): {min(values):.1f}-{max(values):.1f} s over {len(values)} node(s)")
    for page, (median, longest) in figures.dashboard_ms.items():
        print(f"  GET {page}: p50 {median:.0f} ms, longest {longest:.0f} ms")
    if figures.errors:
        print(f"  errors: {len(figures.errors)}, e.g. {figures.errors[:3]}")


def targets(results: list[Figures]) -> None:
    """Say which targets held at the largest size, against the 10-node figures."""
    by_size = {figures.nodes: figures for figures in results}
    largest = by_size[max(by_size)]
    print(f"\ntargets at {largest.nodes} nodes:")
    print(f"  coordinator below one core: {largest.coordinator_cores:.2f} -> {_held(largest.coordinator_cores < 1)}")
    if 10 in by_size and largest.nodes != 10:
        bound = 10 * by_size[10].claim_p99_ms
        print(
            f"  claim p99 below 10x its 10-node value ({bound:.1f} ms): {largest.claim_p99_ms:.1f} ms -> "
            f"{_held(largest.claim_p99_ms < bound)}"
        )
    late = {name: window for name, (window, _ever, interval) in largest.ticks.items() if window > interval}
    print(f"  no tick longer than its interval: {_held(not late)}" + (f" (over: {late})" if late else ""))


def _held(ok: bool) -> str:
    return "held" if ok else "MISSED"


def main() -> None:
    """Parse arguments and run each fleet size in turn, then print the summary and the targets."""
    if len(sys.argv) > 2 and sys.argv[1] == "simulate":
        simulate(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--window-s", type=float, default=60.0)
    parser.add_argument("--ramp-s", type=float, default=300.0, help="longest wait for the fleet to come up")
    parser.add_argument("--job-s", default="5:15", help="job durations, uniform between LOW:HIGH seconds")
    parser.add_argument("--served", type=float, default=0.5, help="share of the nodes behind zeroloop serve")
    parser.add_argument("--simulators", type=int, default=4, help="simulator processes")
    parser.add_argument("--threads", type=int, default=48, help="threads per simulator process")
    parser.add_argument("--pool-size", type=int, default=12, help="store connections per simulator process")
    parser.add_argument("--server-processes", type=int, default=2)
    args = parser.parse_args()
    low, high = (float(part) for part in args.job_s.split(":"))
    args.job_s = (low, high)
    if "ZEROLOOP_TEST_POSTGRES_URL" not in os.environ:
        raise SystemExit("needs PostgreSQL: run through scripts/with-postgres (ZEROLOOP_TEST_POSTGRES_URL)")
    print(
        f"{len(os.sched_getaffinity(0))} CPUs; jobs {low:g}-{high:g} s; heartbeat {HEARTBEAT_S:g} s, lost after "
        f"{NODE_LOST_S:g} s; {args.served:.0%} of the nodes behind the server",
        flush=True,
    )
    results = []
    for size in (int(part) for part in args.sizes.split(",")):
        figures = run_size(size, args)
        report(figures)
        results.append(figures)
    targets(results)


if __name__ == "__main__":
    main()
