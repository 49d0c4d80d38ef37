"""The node agent and the node-lost detector, as daemons.

The agent probes this machine (psutil for CPU, memory and disk; NVML through pynvml
for GPUs, when it is installed and a GPU is present), registers it, and heartbeats its
utilisation every `cluster.heartbeat_interval_s` seconds. The detector runs on the
leader and marks silent nodes lost, re-queuing their jobs through the work queue.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
from collections.abc import Callable
from typing import Any

import psutil

from zeroloop.cluster.leases import leader_fence
from zeroloop.cluster.nodes import Fence, NodeInfo, NodeRefused, Nodes, NodeStatus, Requeue
from zeroloop.config import Settings
from zeroloop.daemons.daemon import Clock, DaemonContext, DaemonHealth, ExitRequest, HealthState, LoopDaemon
from zeroloop.errors import AuthError
from zeroloop.events.wiring import declare
from zeroloop.ports import AppParts, EventPort, NodePort, WorkerParts

log = logging.getLogger(__name__)
declare("zeroloop.cluster.agent", emits=("EVACUATION_FAILED",))

Probe = Callable[[], dict[str, Any]]


def probe_gpus() -> list[dict[str, Any]]:
    """GPUs seen by NVML: index, name, memory_bytes, utilisation_pct, memory_used_bytes; [] without NVML."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []  # the library is installed but there is no driver or no GPU
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            rates = pynvml.nvmlDeviceGetUtilizationRates(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            gpus.append(
                {
                    "index": index,
                    "name": name.decode() if isinstance(name, bytes) else str(name),
                    "memory_bytes": int(memory.total),
                    "memory_used_bytes": int(memory.used),
                    "utilisation_pct": float(rates.gpu),
                }
            )
        return gpus
    finally:
        pynvml.nvmlShutdown()


def slot_count(settings: Settings, gpus: int) -> int:
    """Jobs this node runs at once: `cluster.slots`, or one per GPU, or one."""
    return settings.cluster.slots or max(1, gpus)


def describe_node(settings: Settings, gpus: list[dict[str, Any]] | None = None) -> NodeInfo:
    """This machine as a NodeInfo, from the cluster settings and a probe of its resources."""
    found = probe_gpus() if gpus is None else gpus
    return NodeInfo(
        slots=slot_count(settings, len(found)),
        pool=settings.cluster.pool,
        id=settings.cluster.node_id,
        host=socket.gethostname(),
        provider=settings.cluster.provider,
        cpu_count=os.cpu_count() or 1,
        memory_bytes=int(psutil.virtual_memory().total),
        disk_bytes=int(shutil.disk_usage(_existing(settings.data_dir)).total),
        labels=list(settings.cluster.labels),
        gpus=[{key: gpu[key] for key in ("index", "name", "memory_bytes")} for gpu in found],
        cost_per_hour=settings.cluster.cost_per_hour,
    )


def utilisation(settings: Settings) -> dict[str, Any]:
    """This machine's load now: cpu/memory/disk/gpu percentages and the agent's pid (for the local provider)."""
    gpus = probe_gpus()
    disk = shutil.disk_usage(_existing(settings.data_dir))
    return {
        "pid": os.getpid(),
        "cpu_pct": float(psutil.cpu_percent(interval=None)),
        "memory_pct": float(psutil.virtual_memory().percent),
        "disk_pct": 100.0 * disk.used / disk.total if disk.total else 0.0,
        "gpu_pct": max((gpu["utilisation_pct"] for gpu in gpus), default=None),
        "gpus": [
            {"index": g["index"], "utilisation_pct": g["utilisation_pct"], "memory_used_bytes": g["memory_used_bytes"]}
            for g in gpus
        ],
    }


def node_load(settings: Settings) -> float:
    """This node's load now (%): its busiest GPU's utilisation, else its CPU's."""
    load = utilisation(settings)
    gpu = load.get("gpu_pct")
    return float(gpu if gpu is not None else load["cpu_pct"])


def _existing(path: os.PathLike[str] | str) -> str:
    """The nearest existing ancestor of `path` (the data directory may not exist yet)."""
    current = os.path.abspath(path)
    while not os.path.exists(current) and os.path.dirname(current) != current:
        current = os.path.dirname(current)
    return current


EXIT_ORPHANED = 3  # the dead-man switch: nobody could hear this node for cluster.orphan_after_s
EXIT_REFUSED = 4  # the server refused this worker's token, or the fleet gave the node up: it may not come back


class NodeAgent(LoopDaemon):
    """Registers this node on its first tick, then heartbeats; re-registers if it was marked lost.

    While its node is draining it uploads the artifacts whose only copy it holds
    (`evacuate`), so the node can be terminated without losing data; an upload that fails
    is announced (EVACUATION_FAILED, naming the node and the error) and tried again at the
    next heartbeat, which goes on meanwhile. It asks its process to end (`exit`):

    - with status 0 when the fleet terminates the node (TERMINATING): one stop, one drain;
    - with EXIT_ORPHANED, after a drain, once no heartbeat has gone through for
      `orphan_after_s` seconds (0: never): the dead-man switch of a machine the fleet
      launched, so it stops billing when nobody is left to stop it;
    - with EXIT_REFUSED, at once, when the server refuses its token (revoked, expired) or
      the fleet refuses its registration (it gave the node up): restarting cannot help.
    """

    def __init__(
        self,
        registry: NodePort,
        describe: Callable[[], NodeInfo],
        probe: Probe,
        interval_s: float,
        *,
        clock: Clock,
        evacuate: Callable[[], int] | None = None,
        exit_request: ExitRequest | None = None,
        orphan_after_s: float = 0.0,
        bus: EventPort | None = None,
    ) -> None:
        super().__init__(interval_s, clock=clock)
        self.nodes = registry
        self.describe = describe
        self.probe = probe
        self.evacuate = evacuate
        self.exit = exit_request or ExitRequest()
        self.orphan_after_s = orphan_after_s
        self.bus = bus
        self.node_id: str | None = None
        self.registrations = 0
        self.evacuated = 0
        self.evacuation_error: str | None = None
        self.heard_at = clock()  # the last heartbeat that went through (or the start)
        self.beat_error: str | None = None  # why the last heartbeat did not go through

    async def tick(self) -> None:
        """Heartbeat, registering first (or again, after being marked lost); evacuate while draining."""
        load = await asyncio.to_thread(self.probe)
        try:
            status = await self._beat(load)
        except (AuthError, NodeRefused) as exc:
            self._stop(EXIT_REFUSED, f"this node may not take part any more: {exc}", force=True)
            return
        except Exception as exc:  # noqa: BLE001 - whatever stops a heartbeat counts as not heard
            self._unheard(exc)
            return
        if self.beat_error is not None:
            log.info("node %s heard again after %.0f s", self.node_id, self.clock() - self.heard_at)
        self.heard_at, self.beat_error = self.clock(), None
        if status is NodeStatus.TERMINATING:
            self._stop(0, "the fleet is stopping this node")
        elif status is NodeStatus.DRAINING and self.evacuate is not None:
            await self._evacuate()

    async def _beat(self, load: dict[str, Any]) -> NodeStatus | None:
        """One heartbeat, registering first when the node is unknown, lost or was stopped; its status after."""
        status = None
        if self.node_id is not None:
            status = await asyncio.to_thread(self.nodes.heartbeat, self.node_id, load)
        if status is None or status in (NodeStatus.LOST, NodeStatus.TERMINATED):
            info = await asyncio.to_thread(self.describe)
            await asyncio.to_thread(self.nodes.register, info, load)
            self.node_id = info.id
            self.registrations += 1
            log.info("node %s registered (%s)", info.id, "first time" if status is None else f"was {status}")
            status = await asyncio.to_thread(self.nodes.heartbeat, info.id, load)  # a lost one may come back draining
        return status

    def _unheard(self, exc: BaseException) -> None:
        """A heartbeat did not go through: after `orphan_after_s` of that, the dead-man switch ends the process."""
        self.beat_error = f"{type(exc).__name__}: {exc}"
        silent_s = self.clock() - self.heard_at
        log.warning("node %s: heartbeat failed (%.0f s without one): %s", self.node_id, silent_s, self.beat_error)
        if self.orphan_after_s and silent_s >= self.orphan_after_s:
            self._stop(
                EXIT_ORPHANED,
                f"no heartbeat went through for {silent_s:.0f} s (cluster.orphan_after_s {self.orphan_after_s:g}): "
                f"nobody is left to stop this machine; last error {self.beat_error}",
            )

    def _stop(self, code: int, reason: str, *, force: bool = False) -> None:
        if self.exit.code is None:
            (log.info if code == 0 else log.error)("node %s stopping its process: %s", self.node_id, reason)
        self.exit.request(code, reason, force=force)

    async def _evacuate(self) -> None:
        """Upload what only this node holds; a failure is announced, never the end of the heartbeat."""
        assert self.evacuate is not None
        try:
            moved = await asyncio.to_thread(self.evacuate)
        except Exception as exc:  # noqa: BLE001 - an upload failure must not stop the heartbeat that keeps the node
            error = f"{type(exc).__name__}: {exc}"
            log.error("node %s: evacuating its only copies failed (tried again next beat): %s", self.node_id, error)
            if error != self.evacuation_error and self.bus is not None:
                payload = {"node": self.node_id or "", "error": error[:2000]}
                try:
                    await asyncio.to_thread(self.bus.publish, "EVACUATION_FAILED", payload)
                except Exception as publish_error:  # noqa: BLE001 - the store may be what failed; next beat retries
                    log.warning("node %s: EVACUATION_FAILED not published: %s", self.node_id, publish_error)
                    return  # not remembered: announced at the next failure
            self.evacuation_error = error
            return
        self.evacuation_error = None
        if moved:
            self.evacuated += moved
            log.info("node %s uploaded %d artifact(s) it held the only copy of", self.node_id, moved)

    async def run(self, stop: asyncio.Event) -> None:
        """Heartbeat until stopped; then mark the node TERMINATED, so a clean stop is not later taken for a loss.

        The manager stops this daemon after the executors that depend on it, so the node
        holds no running job by then; a lease it still held expires and is re-queued.
        """
        await super().run(stop)
        if self.node_id is None or self.exit.force:
            return
        try:
            if await asyncio.to_thread(self.nodes.leave, self.node_id):
                log.info("node %s left the cluster", self.node_id)
        except Exception as exc:  # noqa: BLE001 - leaving is a courtesy: an unreachable cluster finds it lost
            log.warning("node %s could not say it left (%s): the cluster will find it lost", self.node_id, exc)

    def health(self) -> DaemonHealth:
        """Unhealthy while heartbeats do not go through; otherwise as any loop daemon."""
        found = super().health()
        if self.beat_error is None:
            return found
        return DaemonHealth(HealthState.UNHEALTHY, found.details)

    def details(self) -> dict[str, Any]:
        """The node id, registrations, evacuations, and how long it has gone unheard."""
        found: dict[str, Any] = {"node": self.node_id, "registrations": self.registrations, "evacuated": self.evacuated}
        if self.beat_error is not None:
            found["unheard_s"] = round(self.clock() - self.heard_at, 1)
            found["heartbeat_error"] = self.beat_error
        if self.evacuation_error is not None:
            found["evacuation_error"] = self.evacuation_error
        if self.exit.code is not None:
            found["exit"] = {"code": self.exit.code, "reason": self.exit.reason}
        return found


class NodeLostDetector(LoopDaemon):
    """Marks silent nodes LOST every tick and re-queues their jobs.

    It judges no node during its first `interval_s + outage_retry_max_s` seconds, nor for
    as long again after a tick failed for a store outage: while the store was away no node
    could heartbeat, so silence then says nothing, and live nodes need that long to be heard.
    """

    def __init__(
        self,
        registry: Nodes,
        lost_after_s: float,
        requeue: Requeue,
        interval_s: float,
        *,
        clock: Clock,
        fence: Fence | None = None,
    ) -> None:
        super().__init__(interval_s, clock=clock)
        self.nodes = registry
        self.lost_after_s = lost_after_s
        self.requeue = requeue
        self.fence = fence
        self.lost_total = 0
        self.grace_s = interval_s + self.outage_retry_max_s
        self.judge_from = clock() + self.grace_s  # epoch seconds

    async def tick(self) -> None:
        """One scan for silent nodes (only a store ping during the grace)."""
        now = self.clock()
        if self.outage_since is not None:
            self.judge_from = max(self.judge_from, now + self.grace_s)
        if now < self.judge_from:
            await asyncio.to_thread(self.nodes.store.ping)  # an outage still shows as one
            return
        lost = await asyncio.to_thread(self.nodes.detect_lost, self.lost_after_s, self.requeue, self.fence)
        self.lost_total += len(lost)
        for node_id in lost:
            log.warning("node %s lost: no heartbeat for %g s", node_id, self.lost_after_s)

    def details(self) -> dict[str, Any]:
        """How many nodes this detector has marked lost."""
        return {"lost_total": self.lost_total}


def node_agent_daemon(context: DaemonContext[WorkerParts]) -> NodeAgent:
    """Factory of the `node_heartbeat` daemon; the dead-man switch arms on machines the fleet launched (a pool)."""
    app = context.parts
    settings = app.settings
    return NodeAgent(
        app.nodes,
        lambda: describe_node(settings),
        lambda: utilisation(settings),
        settings.cluster.heartbeat_interval_s,
        clock=context.clock,
        evacuate=app.artifacts.evacuate,
        exit_request=context.exit,
        orphan_after_s=settings.cluster.orphan_after_s if settings.cluster.pool is not None else 0.0,
        bus=app.bus,
    )


def node_lost_daemon(context: DaemonContext[AppParts]) -> NodeLostDetector:
    """Factory of the `node_lost` daemon; the queue is imported here, lazily, for `requeue_node`."""
    app = context.parts
    queue = getattr(app, "queue", None)
    if queue is None:
        from zeroloop.queue.manager import JobQueue  # the App did not open a queue: build one over the same store

        queue = JobQueue(app.store, app.bus, app.settings)
    cluster = app.settings.cluster
    return NodeLostDetector(
        app.nodes,
        cluster.node_lost_after_s,
        queue.requeue_node,
        cluster.heartbeat_interval_s,
        clock=context.clock,
        fence=leader_fence(app.leases, context.leadership),
    )
