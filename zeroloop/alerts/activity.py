"""Job and node activity, folded from the event log: circuit breakers and lifecycle counters.

A durable, transactional consumer on the leader turns the work queue's events into
what the rest of the cluster acts on:

    JOB_COMPLETED                           success of the node's and the stage's circuits
    JOB_FAILED                              failure of the node's and the stage's circuits
    JOB_DEAD                                failure of the stage's circuit
    JOB_LEASE_EXPIRED, NODE_LOST            failure of the node's circuit (the machine went away,
                                            which says nothing about the stage)
    NODE_REGISTERED, DISK_SPACE_RECOVERED   a (re)joined machine, or one whose full disk has room again,
                                            starts with a closed circuit (failures its full disk caused
                                            must not idle it for the recovery time once it has room)
    every JOB_* event                       the lifecycle counters shown by `zeroloop queue stats`

The queue's claim skips a node whose circuit is open, so a machine that keeps failing
jobs (a broken GPU, a full disk) stops receiving work until its recovery time passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from zeroloop.alerts.rules import Alerts
from zeroloop.cluster.breakers import CircuitBreakers, node_key, stage_key
from zeroloop.cluster.leases import leader_fence
from zeroloop.daemons.adapters import ServiceDaemon, consumers_daemon
from zeroloop.daemons.daemon import DaemonContext
from zeroloop.events.bus import Event
from zeroloop.events.consumer import ConsumerSpec
from zeroloop.events.wiring import declare
from zeroloop.ports import AppParts
from zeroloop.store.database import Store
from zeroloop.store.queries import breakers as breaker_queries
from zeroloop.store.queries import job_stats

NAME = "cluster-activity"
_COUNTER = {
    "JOB_QUEUED": "queued",
    "JOB_CLAIMED": "claimed",
    "JOB_COMPLETED": "completed",
    "JOB_FAILED": "failed",
    "JOB_LEASE_EXPIRED": "expired",
    "JOB_DEAD": "dead",
    "JOB_CANCELLED": "cancelled",
}
HANDLES = (*_COUNTER, "NODE_LOST", "NODE_REGISTERED", "DISK_SPACE_RECOVERED")
declare(NAME, handles=HANDLES)


class ActivityRecorder:
    """Feeds circuit breakers and job counters from queue and node events."""

    def __init__(self, store: Store, breakers: CircuitBreakers, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.breakers = breakers
        self.clock = clock

    def spec(self) -> ConsumerSpec:
        """The durable, transactional consumer that feeds this recorder."""
        return ConsumerSpec(NAME, self.handle, types=HANDLES, transactional=True)

    def handle(self, event: Event) -> None:
        """Apply one event (inside the consumer's transaction)."""
        payload = event.payload
        with self.store.transaction() as conn:
            if event.type in _COUNTER:
                job_stats.bump(conn, payload["config_key"], payload["job_type"], _COUNTER[event.type], self.clock())
            if event.type in ("NODE_REGISTERED", "DISK_SPACE_RECOVERED"):
                breaker_queries.delete_breaker(conn, node_key(payload["node"]))
            elif event.type in ("NODE_LOST", "JOB_LEASE_EXPIRED"):
                self.breakers.record_failure(node_key(payload["node"]))
            elif event.type == "JOB_COMPLETED":
                self.breakers.record_success(node_key(payload["node"]))
                self.breakers.record_success(stage_key(payload["job_type"]))
            elif event.type == "JOB_FAILED":
                self.breakers.record_failure(node_key(payload["node"]))
                self.breakers.record_failure(stage_key(payload["job_type"]))
            elif event.type == "JOB_DEAD":
                self.breakers.record_failure(stage_key(payload["job_type"]))


def operations_daemon(context: DaemonContext[AppParts]) -> ServiceDaemon:
    """Factory of `operations`: the activity recorder and the alerts, as one consumer runner (leader only)."""
    app = context.parts
    recorder = ActivityRecorder(app.store, app.breakers, clock=context.clock)
    alerts = Alerts(app.settings.alerts)
    fence = leader_fence(app.leases, context.leadership)  # a deposed leader must not count anything twice
    specs = [recorder.spec(), alerts.spec()]
    return consumers_daemon(context, specs, describe=lambda: {"alerts_sent": alerts.sent}, fence=fence)
