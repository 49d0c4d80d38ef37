"""The fleet and the autoscaler over an in-memory provider: every edge of the lifecycle and every limit.

The provider here is a fake with the real interface (not a mock): it keeps its machines in
a dict and can be told to refuse launches or to lose a machine. Time is a FakeClock.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.helpers import FakeClock
from zeroloop.app import App
from zeroloop.cluster.nodes import NodeInfo, NodeStatus
from zeroloop.config import AutoscalerSettings, PoolSettings, Settings
from zeroloop.fleet.autoscaler import Autoscaler, PoolView, ScalePlan, assign, plan, retry_after
from zeroloop.fleet.manager import FleetError
from zeroloop.fleet.providers.base import Launched, LaunchSpec, Machine, MachineState, Provider, ProviderError
from zeroloop.pipeline import jobs
from zeroloop.store.queries import pipelines as decision_queries
from zeroloop.store.schema import events


class MemoryProvider(Provider):
    """Machines in a dict; `refuse` makes launches fail, `lose(id)` makes a machine vanish."""

    kind = "memory"

    def __init__(self, name: str, pool: PoolSettings) -> None:
        super().__init__(name, pool)
        self.machines_by_id: dict[str, Machine] = {}
        self.refuse: str | None = None
        self.terminated: list[str] = []
        self.specs: list[LaunchSpec] = []
        self.counter = 0

    def launch(self, spec: LaunchSpec) -> Launched:
        if self.refuse:
            raise ProviderError(self.refuse)
        self.counter += 1
        provider_id = f"m{self.counter}"
        self.specs.append(spec)
        self.machines_by_id[provider_id] = Machine(provider_id, MachineState.RUNNING, spec.node_id)
        return Launched(provider_id, host=f"host-{self.counter}")

    def terminate(self, provider_id: str) -> None:
        self.terminated.append(provider_id)
        self.machines_by_id.pop(provider_id, None)

    def machines(self) -> list[Machine]:
        return list(self.machines_by_id.values())

    def lose(self, provider_id: str) -> None:
        self.machines_by_id.pop(provider_id)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _app(tmp_path: Path, clock: FakeClock, **pool: Any) -> tuple[App, MemoryProvider]:
    # A provider of one's own, named by `module:Class` as a user's would be (zeroloop.plugins).
    fields: dict[str, Any] = {
        "kind": "tests.fleet.test_fleet:MemoryProvider",
        "max_nodes": 3,
        "price_per_hour": 2.0,
        "launch_timeout_s": 60,
    }
    fields.update(pool)
    settings = Settings(
        data_dir=tmp_path,
        providers={"mem": PoolSettings(**fields)},
        autoscaler=AutoscalerSettings(budget_per_hour=5.0, launch_cooldown_s=30, retry_initial_s=10),
    )
    app = App(settings, clock=clock)
    provider = app.fleet.provider("mem")
    assert isinstance(provider, MemoryProvider)
    return app, provider


@pytest.fixture
def fleet(tmp_path: Path, clock: FakeClock) -> Iterator[tuple[App, MemoryProvider]]:
    app, provider = _app(tmp_path, clock)
    with app:
        yield app, provider


def _status(app: App, node_id: str) -> str:
    row = app.nodes.get(node_id)
    assert row is not None
    return str(row["status"])


def _events(app: App, event_type: str) -> list[dict[str, Any]]:
    with app.store.read() as conn:
        query = sa.select(events.c.payload).where(events.c.type == event_type).order_by(events.c.id)
        return [dict(payload) for payload in conn.execute(query).scalars()]


def _register(app: App, node_id: str) -> None:
    app.nodes.register(NodeInfo(node_id, "h", "memory", 1, 1, 1, pool="mem"))


def test_a_launch_registers_bills_and_is_stopped_with_its_cost(
    fleet: tuple[App, MemoryProvider], clock: FakeClock
) -> None:
    app, provider = fleet
    (outcome,) = app.fleet.launch("mem")
    assert outcome.error is None and _status(app, outcome.node_id) == "launching"
    (spec,) = provider.specs
    assert spec.env["ZEROLOOP_CLUSTER__NODE_ID"] == outcome.node_id
    assert spec.env["ZEROLOOP_CLUSTER__POOL"] == "mem"
    assert spec.argv == ("zeroloop", "worker", "--profile", "training_node")
    _register(app, outcome.node_id)
    assert _status(app, outcome.node_id) == "active"
    row = app.nodes.get(outcome.node_id)
    assert row is not None and row["provider_id"] == "m1"  # registration kept the launch's record
    clock.advance(1800)
    assert app.fleet.terminate(outcome.node_id, reason="test") is NodeStatus.TERMINATING
    assert provider.terminated == ["m1"]
    clock.advance(60)  # billed until the provider says it is gone
    app.fleet.reconcile(app.queue.requeue_node)
    assert _status(app, outcome.node_id) == "terminated"
    (gone,) = _events(app, "NODE_TERMINATED")
    assert gone["cost"] == pytest.approx(2.0 * 1860 / 3600)
    assert app.fleet.costs()["mem"] == pytest.approx(2.0 * 1860 / 3600)


def test_limits_refuse_launches_with_one_clear_line_and_nothing_recorded(fleet: tuple[App, MemoryProvider]) -> None:
    app, provider = fleet
    with pytest.raises(FleetError, match="max_nodes 3"):
        app.fleet.launch("mem", 4)
    with pytest.raises(FleetError, match=r"budget reached: the fleet costs 0/h and 3 more mem node\(s\) add 6/h"):
        app.fleet.launch("mem", 3)  # 3 x 2.0/h is over the budget of 5.0/h
    assert app.nodes.list_nodes() == [] and provider.specs == []
    assert _events(app, "FLEET_BUDGET_REACHED") == [
        {"pool": "mem", "budget_per_hour": 5.0, "cost_per_hour": 0.0, "refused": 3}
    ]
    with pytest.raises(FleetError, match="unknown provider pool 'gpu'; known pools: mem"):
        app.fleet.launch("gpu")


def test_a_refused_launch_fails_the_node_and_counts_against_the_provider(fleet: tuple[App, MemoryProvider]) -> None:
    app, provider = fleet
    provider.refuse = "no capacity in region"
    (outcome,) = app.fleet.launch("mem")
    assert outcome.error == "no capacity in region"
    assert _status(app, outcome.node_id) == "failed"
    assert _events(app, "NODE_LAUNCH_FAILED")[0]["reason"] == "no capacity in region"
    assert app.breakers.get("provider:mem").failures == 1


def test_a_worker_that_never_registers_is_failed_and_stopped(
    fleet: tuple[App, MemoryProvider], clock: FakeClock
) -> None:
    app, provider = fleet
    (outcome,) = app.fleet.launch("mem")
    clock.advance(61)
    done = app.fleet.reconcile(app.queue.requeue_node)
    assert done.failed == [outcome.node_id]
    assert provider.terminated == ["m1"]  # stopped at the provider: it may exist and bill
    done = app.fleet.reconcile(app.queue.requeue_node)
    assert _status(app, outcome.node_id) == "terminated"


def test_a_machine_the_provider_lost_makes_its_node_lost_and_requeues_its_jobs(
    fleet: tuple[App, MemoryProvider],
) -> None:
    app, provider = fleet
    (outcome,) = app.fleet.launch("mem")
    _register(app, outcome.node_id)
    job = app.queue.enqueue("selfplay", "c_2p")
    lease = app.queue.claim(outcome.node_id)
    assert lease is not None and lease.job.id == job.id
    provider.lose("m1")  # e.g. a spot instance reclaimed
    done = app.fleet.reconcile(app.queue.requeue_node)
    assert done.lost == [outcome.node_id]
    assert app.queue.get(job.id).status.value == "queued"  # at once, not after the lease
    assert _events(app, "NODE_LOST")[0]["reason"] == "its provider says the machine is gone"
    app.fleet.reconcile(app.queue.requeue_node)
    assert _status(app, outcome.node_id) == "terminated"


@pytest.mark.parametrize("action", ["report", "terminate"])
def test_an_unknown_billed_machine_is_an_orphan(tmp_path: Path, clock: FakeClock, action: str) -> None:
    app, provider = _app(tmp_path, clock)
    app.settings.autoscaler.orphans = action  # type: ignore[assignment]
    with app:
        provider.machines_by_id["x9"] = Machine("x9", MachineState.RUNNING, "somebody-else")
        done = app.fleet.reconcile(app.queue.requeue_node)
        assert done.orphans == ["x9"]
        assert _events(app, "FLEET_ORPHAN_FOUND")[0]["action"] == action
        assert provider.terminated == (["x9"] if action == "terminate" else [])


def test_failed_listings_leave_the_launch_breaker_closed_and_judge_nothing(
    fleet: tuple[App, MemoryProvider],
) -> None:
    # A slurmctld restart: squeue fails for a while; the machines are fine and launches still work.
    app, provider = fleet
    (outcome,) = app.fleet.launch("mem")
    _register(app, outcome.node_id)
    listing = provider.machines

    def unreachable() -> list[Machine]:
        raise ProviderError("squeue: slurmctld not responding")

    provider.machines = unreachable  # type: ignore[method-assign]
    for _ in range(5):
        assert app.fleet.reconcile(app.queue.requeue_node).unlisted == ["mem"]
    assert app.breakers.allow("provider:mem") and app.breakers.get("provider:mem").failures == 0
    assert _status(app, outcome.node_id) == "active"  # not lost on a listing that failed
    provider.machines = listing  # type: ignore[method-assign]
    assert app.fleet.launch("mem")[0].error is None


def test_a_request_whose_launcher_died_is_adopted_or_failed(
    fleet: tuple[App, MemoryProvider], clock: FakeClock
) -> None:
    app, provider = fleet
    adopted, missing = app.fleet.request("mem", 2)
    provider.machines_by_id["m7"] = Machine("m7", MachineState.RUNNING, adopted)  # launched, answer never recorded
    clock.advance(61)
    done = app.fleet.reconcile(app.queue.requeue_node)
    assert done.failed == [missing]
    assert _status(app, adopted) == "launching"
    assert done.orphans == []


def test_a_worker_that_registers_before_its_launch_is_recorded_is_kept(
    fleet: tuple[App, MemoryProvider], clock: FakeClock
) -> None:
    # A machine that boots faster than its loaded launcher records the provider's answer.
    app, provider = fleet
    (node_id,) = app.fleet.request("mem")
    launch = provider.launch

    def launch_and_boot(spec: LaunchSpec) -> Launched:
        launched = launch(spec)
        _register(app, spec.node_id)  # REQUESTED -> active, before start() records the answer
        app.fleet.reconcile(app.queue.requeue_node)  # found by its node id meanwhile, not lost
        return launched

    provider.launch = launch_and_boot  # type: ignore[method-assign]
    assert app.fleet.start(node_id).error is None
    assert provider.terminated == [] and _status(app, node_id) == "active"
    row = app.nodes.get(node_id)
    assert row is not None and row["provider_id"] == "m1"
    clock.advance(61)  # past launch_timeout_s: an active node is not failed for it
    assert app.fleet.reconcile(app.queue.requeue_node).failed == []
    assert _status(app, node_id) == "active"


def test_a_machine_still_running_after_its_worker_left_is_stopped_again(fleet: tuple[App, MemoryProvider]) -> None:
    # The worker drained and left (its node is terminated) but its process hangs on the way out: billed.
    app, provider = fleet
    (outcome,) = app.fleet.launch("mem")
    _register(app, outcome.node_id)
    assert app.nodes.leave(outcome.node_id)
    provider.terminate = provider.terminated.append  # type: ignore[method-assign]  # asked, but it hangs on
    app.fleet.reconcile(app.queue.requeue_node)
    assert provider.terminated == ["m1"]  # asked again at each pass until the provider says it is gone


def test_draining_stops_claims_at_once(fleet: tuple[App, MemoryProvider]) -> None:
    app, _provider = fleet
    (outcome,) = app.fleet.launch("mem")
    _register(app, outcome.node_id)
    app.queue.enqueue("selfplay", "c_2p")
    app.nodes.set_status(outcome.node_id, NodeStatus.DRAINING)
    assert app.queue.claim(outcome.node_id) is None
    app.nodes.set_status(outcome.node_id, NodeStatus.ACTIVE)
    assert app.queue.claim(outcome.node_id) is not None


def _view(name: str = "p", **fields: Any) -> PoolView:
    settings = {"kind": "local", "max_nodes": 4}
    settings.update(fields.pop("settings", {}))
    return PoolView(name=name, settings=PoolSettings(**settings), job_types=None, **fields)


def _demand(count: int, job_type: str = "selfplay", gpus: int = 0, labels: list[str] | None = None) -> dict[str, Any]:
    return {"type": job_type, "need_gpus": gpus, "need_memory_bytes": 0, "need_labels": labels, "count": count}


SETTINGS = AutoscalerSettings(launch_cooldown_s=30, max_launches_per_tick=10)


def test_plan_fills_free_and_starting_slots_before_renting() -> None:
    (scale,) = plan([_view(free_slots=2, starting=1)], [_demand(5)], now=100, settings=SETTINGS, fleet_cost_per_hour=0)
    assert scale.launch == 2  # 5 queued - 2 free - 1 starting
    (scale,) = plan([_view(free_slots=5)], [_demand(5)], now=100, settings=SETTINGS, fleet_cost_per_hour=0)
    assert (scale.launch, scale.reason) == (0, "enough capacity")


def test_plan_sends_each_job_to_the_cheapest_pool_that_can_run_it() -> None:
    cheap_cpu = _view("cpu", settings={"price_per_hour": 0.1})
    dear_gpu = _view("gpu", settings={"price_per_hour": 3.0, "gpus": 1, "labels": ["fast"]})
    plans = {
        p.pool: p.launch
        for p in plan(
            [dear_gpu, cheap_cpu],
            [_demand(3), _demand(2, "train", gpus=1), _demand(1, labels=["fast"]), _demand(9, gpus=2)],
            now=0,
            settings=SETTINGS,
            fleet_cost_per_hour=0,
        )
    }
    assert plans == {"cpu": 3, "gpu": 3}  # jobs needing 2 GPUs fit nowhere


def test_work_the_cheapest_pool_cannot_take_spills_to_the_next_able_pool_and_the_decisions_say_why() -> None:
    def plans(cheap: PoolView, **kwargs: Any) -> dict[str, ScalePlan]:
        dear = _view("dear", settings={"price_per_hour": 3.0, "max_nodes": 10})
        found = plan([dear, cheap], [_demand(8)], now=100, settings=SETTINGS, fleet_cost_per_hour=0, **kwargs)
        return {p.pool: p for p in found}

    # At max_nodes: the cheap pool takes what its free slots and remaining room hold, the rest goes on.
    full = plans(_view("cheap", live=3, free_slots=1, settings={"price_per_hour": 0.5}))
    assert (full["cheap"].launch, full["dear"].launch) == (1, 6)
    assert full["dear"].evidence["spilled_from"] == {"cheap": 6}
    assert full["cheap"].evidence["spilled_to"] == {"dear": 6}
    assert full["cheap"].evidence["spilled_because"] == "it is at max_nodes 4"
    # An open circuit or a backoff after failed launches: everything beyond the free slots spills.
    broken = plans(_view("cheap", free_slots=2, breaker_open=True, settings={"price_per_hour": 0.5}))
    assert broken["dear"].launch == 6 and broken["cheap"].evidence["spilled_because"] == "its circuit is open"
    backing = plans(_view("cheap", retry_after=200, settings={"price_per_hour": 0.5}))
    assert backing["dear"].launch == 8
    assert backing["cheap"].evidence["spilled_because"] == "it backs off after a failed launch"


def test_spill_over_respects_the_budget_shared_by_the_pools_cheapest_first() -> None:
    cheap = _view("cheap", settings={"price_per_hour": 1.0, "max_nodes": 2})
    dear = _view("dear", settings={"price_per_hour": 2.0, "max_nodes": 10})
    budget = AutoscalerSettings(budget_per_hour=7.0, max_launches_per_tick=10)
    assigned = assign([dear, cheap], [_demand(10)], settings=budget, fleet_cost_per_hour=1.0)
    # 6/h left: two cheap machines (2/h), then two dear ones (4/h); the remaining 6 jobs wait at the cheap pool.
    assert assigned.jobs == {"cheap": 8, "dear": 2}
    found = {p.pool: p for p in plan([dear, cheap], [_demand(10)], now=0, settings=budget, fleet_cost_per_hour=1.0)}
    assert (found["cheap"].launch, found["dear"].launch) == (2, 2)
    # Jobs only one pool can run do not spill anywhere: they wait for it.
    gpu_only = assign([dear, cheap], [_demand(3, gpus=1)], settings=budget)
    assert gpu_only.jobs == {"cheap": 0, "dear": 0} and gpu_only.spilled_from == {}


def test_plan_respects_max_cooldown_backoff_breaker_budget_and_replaces_below_min() -> None:
    def one(view: PoolView, queued: int = 10, cost: float = 0.0, settings: AutoscalerSettings = SETTINGS) -> Any:
        (scale,) = plan([view], [_demand(queued)], now=100, settings=settings, fleet_cost_per_hour=cost)
        return scale.launch, scale.reason

    assert one(_view(live=4)) == (0, "at max_nodes 4 (10 job(s) waiting)")
    assert one(_view(last_launch_at=90)) == (0, "cooldown: launched 10 s ago")
    assert one(_view(retry_after=130)) == (0, "backing off after a failed launch for 30 s")
    assert one(_view(breaker_open=True)) == (0, "circuit open after failed launches (10 job(s) waiting)")
    priced = _view(settings={"price_per_hour": 2.0})
    assert one(priced, cost=1.0, settings=AutoscalerSettings(budget_per_hour=6.0)) == (2, "10 job(s) waiting")
    assert one(priced, cost=5.0, settings=AutoscalerSettings(budget_per_hour=6.0))[0] == 0
    below = _view(live=1, lost=1, last_launch_at=95, settings={"min_nodes": 2})
    assert one(below, queued=0) == (1, "1 below min_nodes")  # replacement ignores the cooldown
    assert retry_after(0, 50, SETTINGS) is None
    assert retry_after(3, 50, AutoscalerSettings(retry_initial_s=10, retry_max_s=25)) == 75


def test_the_autoscaler_records_each_new_decision_and_launches_in_the_background(
    fleet: tuple[App, MemoryProvider],
) -> None:
    app, provider = fleet
    for _ in range(2):
        app.queue.enqueue("selfplay", "c_2p")
    scaler = Autoscaler(
        app.fleet, app.settings.autoscaler, jobs.profile_job_types, requeue=app.queue.requeue_node, clock=app.clock
    )
    try:
        (scale,) = scaler.run_once()
        assert scale.launch == 2
        assert [o.error for o in scaler.collect(timeout_s=10)] == [None, None]
        assert len(provider.specs) == 2
        scaler.run_once()
        scaler.run_once()  # the same decision is recorded once
        with app.store.read() as conn:
            outcomes = [row["outcome"] for row in decision_queries.list_decisions(conn, "fleet:mem")]
        assert outcomes == ["hold", "launch 2"]
    finally:
        scaler.close()


def test_holding_back_for_the_budget_publishes_fleet_budget_reached_once_per_decision(
    fleet: tuple[App, MemoryProvider], clock: FakeClock
) -> None:
    app, _provider = fleet  # 2.0/h a machine, a budget of 5.0/h, max_nodes 3
    for _ in range(5):
        app.queue.enqueue("selfplay", "c_2p")
    scaler = Autoscaler(
        app.fleet, app.settings.autoscaler, jobs.profile_job_types, requeue=app.queue.requeue_node, clock=app.clock
    )
    try:
        (scale,) = scaler.run_once()
        assert scale.launch == 2  # three wanted, two affordable
        assert _events(app, "FLEET_BUDGET_REACHED") == [
            {"pool": "mem", "budget_per_hour": 5.0, "cost_per_hour": 0.0, "refused": 1}
        ]
        scaler.collect(timeout_s=10)
        clock.advance(31)  # past the cooldown
        (held,) = scaler.run_once()
        assert (held.launch, held.reason) == (0, "budget reached (5 job(s) waiting)")
        scaler.run_once()  # the same decision again: no second alert for it
        assert [e["cost_per_hour"] for e in _events(app, "FLEET_BUDGET_REACHED")] == [0.0, 4.0]
    finally:
        scaler.close()


def test_a_pool_behind_the_server_gives_each_machine_a_token_of_its_own_revoked_when_gone(
    tmp_path: Path, clock: FakeClock
) -> None:
    from zeroloop.control.tokens import Tokens
    from zeroloop.errors import AuthError

    app, provider = _app(tmp_path, clock, server_url="https://zl.example.org:8780")
    with app:
        (outcome,) = app.fleet.launch("mem")
        (spec,) = provider.specs
        assert "ZEROLOOP_STORE__URL" not in spec.env  # no database credentials on a rented machine
        assert spec.env["ZEROLOOP_SERVER__URL"] == "https://zl.example.org:8780"
        token = spec.env["ZEROLOOP_SERVER__TOKEN"]
        assert token not in " ".join(spec.argv)
        tokens = Tokens(app.store, clock=clock)
        principal = tokens.check(token)
        principal.may_act_as(outcome.node_id)
        app.fleet.terminate(outcome.node_id, reason="test")
        app.fleet.reconcile(app.queue.requeue_node)
        assert _status(app, outcome.node_id) == "terminated"
        with pytest.raises(AuthError):
            tokens.check(token)


def test_cost_per_config_key_is_each_jobs_time_on_its_node_at_the_nodes_price(
    fleet: tuple[App, MemoryProvider], clock: FakeClock
) -> None:
    from zeroloop.store.queries import fleet as fleet_queries

    app, _provider = fleet
    (outcome,) = app.fleet.launch("mem")  # 2.0 per hour, one slot
    _register(app, outcome.node_id)
    app.queue.enqueue("selfplay", "c_2p")
    lease = app.queue.claim(outcome.node_id)
    assert lease is not None
    clock.advance(30)  # within the lease
    app.queue.heartbeat(lease.job.id, lease.token)
    clock.advance(30)
    app.queue.heartbeat(lease.job.id, lease.token)
    app.queue.complete(lease.job.id, lease.token, {"ok": True})
    with app.store.read() as conn:
        assert fleet_queries.config_costs(conn) == {"c_2p": pytest.approx(2.0 * 60 / 3600)}


def test_status_says_how_long_the_queued_work_will_take_from_recent_durations(
    fleet: tuple[App, MemoryProvider], clock: FakeClock
) -> None:
    from rich.console import Console

    from zeroloop.cli.cluster import summary_table

    app, _provider = fleet
    app.nodes.register(NodeInfo("w1", "h", "memory", 1, 1, 1, slots=2))
    for _ in range(2):  # two selfplay jobs that took 40 s each
        app.queue.enqueue("selfplay", "c_2p")
        lease = app.queue.claim("w1")
        assert lease is not None
        clock.advance(20)
        app.queue.heartbeat(lease.job.id, lease.token)
        clock.advance(20)
        app.queue.complete(lease.job.id, lease.token, {})
    for _ in range(5):
        app.queue.enqueue("selfplay", "c_2p")
    console = Console(width=200, record=True)
    console.print(summary_table(app))
    assert "queued 5, running 0, about 100 s of work for 2 slot(s)" in console.export_text()


def test_work_under_backpressure_skips_the_cooldown_and_says_so() -> None:
    view = _view(last_launch_at=95)
    (cooling,) = plan([view], [_demand(6)], now=100, settings=SETTINGS, fleet_cost_per_hour=0, pressure={})
    assert cooling.launch == 0
    (pressed,) = plan(
        [view], [_demand(6)], now=100, settings=SETTINGS, fleet_cost_per_hour=0, pressure={"selfplay": "HIGH"}
    )
    assert pressed.launch == 4 and pressed.evidence["backpressure"] == {"selfplay": "HIGH"}


def test_a_lost_node_with_the_only_copy_needs_force_to_be_terminated(fleet: tuple[App, MemoryProvider]) -> None:
    from zeroloop.store.queries import artifacts as artifact_queries

    app, provider = fleet
    (outcome,) = app.fleet.launch("mem")
    _register(app, outcome.node_id)
    with app.store.transaction() as conn:
        artifact_queries.record_artifact(
            conn, {"sha256": "a" * 64, "kind": "game_batch", "size_bytes": 1, "meta": {}, "created_at": 0.0}
        )
        artifact_queries.record_copy(conn, sha256="a" * 64, location="file:///held/a", node=outcome.node_id, now=0.0)
    provider.lose("m1")
    app.fleet.reconcile(app.queue.requeue_node)
    assert _status(app, outcome.node_id) == "lost"
    with pytest.raises(FleetError, match=r"is lost and holds the only copy of 1 artifact.*--force"):
        app.fleet.terminate(outcome.node_id, reason="test")
    assert _status(app, outcome.node_id) == "lost"
    assert app.fleet.terminate(outcome.node_id, reason="test", force=True) is NodeStatus.TERMINATING


def test_a_request_withdrawn_while_the_provider_launched_stops_the_new_machine(
    fleet: tuple[App, MemoryProvider],
) -> None:
    app, provider = fleet
    (node_id,) = app.fleet.request("mem")
    launch = provider.launch

    def launch_then_withdraw(spec: LaunchSpec) -> Launched:
        launched = launch(spec)
        app.fleet.terminate(spec.node_id, reason="withdrawn meanwhile")  # REQUESTED -> terminated
        return launched

    provider.launch = launch_then_withdraw  # type: ignore[method-assign]
    outcome = app.fleet.start(node_id)
    assert outcome.error is not None and "withdrawn" in outcome.error
    assert provider.terminated == ["m1"] and provider.machines() == []
    assert _status(app, node_id) == "terminated"
    assert app.fleet.start(node_id).error == "the launch request was withdrawn"  # asks the provider nothing
    assert len(provider.specs) == 1


def test_launches_per_tick_are_capped_and_lost_hand_started_nodes_cost_nothing() -> None:
    from zeroloop.cluster.nodes import billed

    (scale,) = plan(
        [_view()], [_demand(10)], now=0, settings=AutoscalerSettings(max_launches_per_tick=2), fleet_cost_per_hour=0
    )
    assert scale.launch == 2
    assert billed(NodeStatus.LOST, managed=True) and not billed(NodeStatus.LOST, managed=False)
    assert not billed(NodeStatus.REQUESTED, managed=True) and not billed(NodeStatus.TERMINATED, managed=True)


def test_a_held_pool_whose_figures_alone_move_records_no_new_decision(fleet: tuple[App, MemoryProvider]) -> None:
    app, _provider = fleet
    scaler = Autoscaler(
        app.fleet, app.settings.autoscaler, jobs.profile_job_types, requeue=app.queue.requeue_node, clock=app.clock
    )
    try:
        held = [ScalePlan("mem", 0, f"at max_nodes 3 ({waiting} job(s) waiting)", {}) for waiting in (8, 10, 7)]
        for scale in [*held, ScalePlan("mem", 0, "cooldown: launched 12 s ago", {})]:
            scaler._record(scale)
            scaler.last_plans = [scale]
        with app.store.read() as conn:
            reasons = [row["evidence"]["reason"] for row in decision_queries.list_decisions(conn, "fleet:mem")]
        assert sorted(reasons) == ["at max_nodes 3 (8 job(s) waiting)", "cooldown: launched 12 s ago"]
    finally:
        scaler.close()
