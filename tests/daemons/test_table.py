"""The daemon table: dependency order, cycles, profiles, factories."""

from __future__ import annotations

from pathlib import Path

import pytest

from zeroloop import app as app_module
from zeroloop.app import daemon_table as default_registry
from zeroloop.app import worker_table
from zeroloop.daemons.daemon import DaemonContext, DaemonHealth, HealthState
from zeroloop.daemons.table import DaemonSpec, DaemonTable, Layer, order, resolve
from zeroloop.errors import DaemonError
from zeroloop.profiles import PROFILES, WORKER_PROFILES


class _Idle:
    async def run(self, stop: object) -> None:
        return None

    def health(self) -> DaemonHealth:
        return DaemonHealth(HealthState.HEALTHY)


def _spec(name: str, *deps: str, layer: Layer = Layer.CORE) -> DaemonSpec:
    return DaemonSpec(name, lambda _ctx: _Idle(), "test", frozenset({"minimal"}), depends_on=deps, layer=layer)


def test_order_puts_dependencies_first() -> None:
    specs = [_spec("c", "b"), _spec("b", "a"), _spec("a"), _spec("x", layer=Layer.FOUNDATIONAL)]
    names = [spec.name for spec in order(specs)]
    assert names.index("a") < names.index("b") < names.index("c")
    assert names[0] == "x"  # an earlier layer comes first when dependencies allow


def test_a_cycle_is_an_error_naming_it() -> None:
    with pytest.raises(DaemonError, match=r"cycle: a -> c -> b -> a"):
        order([_spec("a", "c"), _spec("b", "a"), _spec("c", "b")])


def test_an_unknown_dependency_is_an_error() -> None:
    with pytest.raises(DaemonError, match="depends on ghost"):
        order([_spec("a", "ghost")])


def test_registry_refuses_duplicates_unknown_profiles_and_unguarded_leader_only() -> None:
    registry = DaemonTable()
    registry.add(_spec("a"))
    with pytest.raises(DaemonError, match="already registered"):
        registry.add(_spec("a"))
    with pytest.raises(DaemonError, match="unknown profiles"):
        registry.add(DaemonSpec("b", "m:f", "t", frozenset({"nope"})))
    with pytest.raises(DaemonError, match="must depend on leader_election"):
        registry.add(DaemonSpec("c", "m:f", "t", frozenset({"full"}), leader_only=True))
    with pytest.raises(DaemonError, match="unknown profile"):
        registry.for_profile("nope")


@pytest.mark.parametrize("profile", PROFILES)
def test_every_builtin_profile_orders_and_every_factory_resolves(profile: str) -> None:
    specs = default_registry().for_profile(profile)
    assert specs
    for spec in specs:
        assert callable(resolve(spec.factory))


def test_profiles_hold_the_expected_daemons() -> None:
    registry = default_registry()

    def names(profile: str) -> set[str]:
        return {spec.name for spec in registry.for_profile(profile)}

    assert names("full") == set(registry.specs) - {"selfplay_executor"}  # full runs the all-types executor
    assert names("minimal") == {"event_consumers"}
    for worker in ("training_node", "ephemeral"):
        assert names(worker) == {"node_heartbeat", "job_executor", "model_distribution", "disk_space"}
    assert names("selfplay") == {"node_heartbeat", "selfplay_executor", "model_distribution", "disk_space"}
    assert "node_heartbeat" not in names("coordinator")
    leader_only = {"node_lost", "queue_reaper", "idle_shutdown", "health_monitor", "autoscaler", "pipeline"}
    leader_only |= {"maintenance", "backup"}
    assert {"leader_election", *leader_only} <= names("coordinator")
    assert all(registry.specs[name].leader_only for name in leader_only)
    assert all(not isinstance(spec.factory, str) for spec in registry.specs.values())  # callables, not paths


def test_a_worker_runs_exactly_the_worker_profiles_daemons() -> None:
    """`zeroloop worker` (over the store or the server) runs worker_table(): every daemon of a worker profile."""
    everything = default_registry()
    for profile in WORKER_PROFILES:
        expected = [spec.name for spec in everything.for_profile(profile)]
        assert [spec.name for spec in worker_table().for_profile(profile)] == expected
    assert "leader_election" not in worker_table().specs and "event_consumers" not in worker_table().specs


def test_a_daemon_of_a_worker_profile_declared_with_the_apps_parts_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    workers, others = app_module._specs()
    misplaced = DaemonSpec("sneaky", lambda _ctx: _Idle(), "reads the store on a worker", frozenset({"selfplay"}))
    monkeypatch.setattr(app_module, "_specs", lambda: (workers, (*others, misplaced)))
    with pytest.raises(DaemonError, match=r"sneaky runs in worker profiles \['selfplay'\] but its factory takes"):
        default_registry()


def test_docs_table_lists_every_daemon() -> None:
    text = (Path(__file__).parents[2] / "docs" / "daemons.md").read_text()
    for name in default_registry().specs:
        assert f"`{name}`" in text


def test_an_unresolvable_factory_path_says_so() -> None:
    with pytest.raises(DaemonError, match="cannot be loaded"):
        resolve("zeroloop.nowhere:factory")
    spec = DaemonSpec("x", "zeroloop.daemons.table:PROFILES", "t", frozenset({"full"}))
    with pytest.raises(DaemonError, match="not callable"):
        spec.build(DaemonContext(parts=None))  # type: ignore[arg-type]
