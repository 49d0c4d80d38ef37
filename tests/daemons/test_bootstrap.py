"""Bootstrap: layered start that skips dependents of a failed layer, system health, shutdown."""

from __future__ import annotations

import asyncio

from tests.helpers import FakeClock, run_async
from zeroloop.app import App
from zeroloop.bootstrap import get_system_health, initialize_all_coordinators, shutdown_all_coordinators
from zeroloop.cluster.leases import LEADER
from zeroloop.daemons.daemon import DaemonContext, DaemonHealth, DaemonState, HealthState
from zeroloop.daemons.table import DaemonSpec, DaemonTable, Layer


class Quiet:
    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()

    def health(self) -> DaemonHealth:
        return DaemonHealth(HealthState.HEALTHY)


def _broken(_ctx: DaemonContext) -> Quiet:
    raise ImportError("zeroloop.queue is not installed")


def _table(*, foundational_breaks: bool) -> DaemonTable:
    table = DaemonTable()
    full = frozenset({"full"})
    table.add(
        DaemonSpec(
            "base",
            _broken if foundational_breaks else (lambda _ctx: Quiet()),
            "t",
            full,
            layer=Layer.FOUNDATIONAL,
            critical=True,
        )
    )
    table.add(DaemonSpec("side", lambda _ctx: Quiet(), "t", full, layer=Layer.FOUNDATIONAL))
    table.add(DaemonSpec("core", lambda _ctx: Quiet(), "t", full, layer=Layer.CORE))
    table.add(DaemonSpec("app", lambda _ctx: Quiet(), "t", full, layer=Layer.APPLICATION))
    return table


@run_async
async def test_layers_start_in_order_and_report(app: App) -> None:
    clock = FakeClock()
    status = await initialize_all_coordinators(
        app, table=_table(foundational_breaks=False), clock=clock, sleep=clock.sleep
    )
    assert status["layers"]["foundational"]["status"] == "started"
    assert set(status["_instances"]) == {"base", "side", "core", "app"}
    # Health needs a leader and reads the daemon records in the clock they were written with.
    app.health.clock = clock
    app.leases.clock = clock
    assert app.leases.acquire(LEADER) is not None
    health = get_system_health(app)
    assert set(health) >= {"overall_health", "status", "coordinators", "daemons", "issues"}
    assert health["status"] == "healthy"
    assert health["coordinators"] == {"base": 1.0, "side": 1.0, "core": 1.0, "app": 1.0}
    await shutdown_all_coordinators(app)
    assert app.daemons is not None
    assert {record.state for record in app.daemons.records.values()} == {DaemonState.STOPPED}


@run_async
async def test_a_failed_layer_skips_the_later_layers_and_says_so(app: App) -> None:
    clock = FakeClock()
    status = await initialize_all_coordinators(
        app, table=_table(foundational_breaks=True), clock=clock, sleep=clock.sleep
    )
    assert status["layers"]["foundational"] == {"status": "failed", "daemons": ["base", "side"], "failed": ["base"]}
    assert status["layers"]["core"]["status"] == "skipped"
    assert "foundational layer failed" in status["layers"]["core"]["reason"]
    assert "zeroloop.queue is not installed" in status["layers"]["application"]["reason"]
    assert status["skipped"] == ["core", "app"]
    assert status["_instances"] == ["side"]
    health = get_system_health(app)
    assert any(issue.startswith("core: held") for issue in health["issues"])
    assert health["coordinators"]["base"] == 0.0
    await shutdown_all_coordinators(app)
