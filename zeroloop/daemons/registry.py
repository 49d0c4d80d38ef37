"""The declarative table of daemons and the profiles that run them.

A `DaemonSpec` says what a daemon is (name, factory), what it needs (dependencies,
layer), how it is supervised (restart policy, critical) and where it runs (profiles,
leader-only). Factories are named by a dotted path `module:function` and imported only
when the daemon starts, so this table imports nothing above the daemons layer and a
part still being written cannot break the others. `Registry` is a plain value: build
one with `default_registry()`, add specs to it (the pipeline adds its job executor to
the worker profiles this way), and ask it for a profile's daemons in dependency order.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

from zeroloop.daemons.daemon import Daemon, DaemonContext
from zeroloop.errors import DaemonError

Factory = Callable[[DaemonContext], Daemon]

PROFILES = ("coordinator", "training_node", "ephemeral", "selfplay", "minimal", "full")
WORKER_PROFILES = ("training_node", "ephemeral", "selfplay")


class RestartPolicy(StrEnum):
    """What the manager does when a daemon's run ends."""

    ALWAYS = "always"  # restart after a crash and after an unexpected normal return
    ON_FAILURE = "on_failure"  # restart after a crash; a normal return means done
    NEVER = "never"  # a crash is final: FAILED at once


class Layer(IntEnum):
    """Start layers: a layer whose critical daemon fails skips every later layer."""

    FOUNDATIONAL = 1
    CORE = 2
    APPLICATION = 3


@dataclass(frozen=True)
class DaemonSpec:
    """One daemon, declared: `factory` is a callable or a dotted path `module:function`."""

    name: str
    factory: Factory | str
    description: str
    profiles: frozenset[str]
    depends_on: tuple[str, ...] = ()
    layer: Layer = Layer.CORE
    restart: RestartPolicy = RestartPolicy.ALWAYS
    critical: bool = False
    leader_only: bool = False

    def build(self, context: DaemonContext) -> Daemon:
        """Resolve the factory (importing it now) and construct a fresh daemon instance."""
        return resolve(self.factory)(context)


def resolve(factory: Factory | str) -> Factory:
    """The callable a factory names; DaemonError when the path does not resolve."""
    if not isinstance(factory, str):
        return factory
    module_name, _, attribute = factory.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise DaemonError(f"daemon factory {factory!r} cannot be loaded: {exc}") from exc
    if not callable(found):
        raise DaemonError(f"daemon factory {factory!r} is not callable")
    return found  # type: ignore[no-any-return]


def order(specs: Iterable[DaemonSpec]) -> list[DaemonSpec]:
    """The specs in dependency order (stable otherwise); DaemonError on a cycle or an unknown dependency."""
    by_name: dict[str, DaemonSpec] = {}
    for spec in specs:
        if spec.name in by_name:
            raise DaemonError(f"daemon {spec.name} is declared twice")
        by_name[spec.name] = spec
    for spec in by_name.values():
        missing = [dep for dep in spec.depends_on if dep not in by_name]
        if missing:
            raise DaemonError(f"daemon {spec.name} depends on {', '.join(missing)}, which is not in the same set")
    done: list[DaemonSpec] = []
    placed: set[str] = set()
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in placed:
            return
        if name in visiting:
            cycle = [*visiting[visiting.index(name) :], name]
            raise DaemonError(f"daemon dependency cycle: {' -> '.join(cycle)}")
        visiting.append(name)
        for dep in by_name[name].depends_on:
            visit(dep)
        visiting.pop()
        placed.add(name)
        done.append(by_name[name])

    for spec in sorted(by_name.values(), key=lambda spec: spec.layer):
        visit(spec.name)
    return done


@dataclass
class Registry:
    """A set of daemon specs; `for_profile` answers which run in a profile and in what order."""

    specs: dict[str, DaemonSpec] = field(default_factory=dict)

    def add(self, spec: DaemonSpec) -> None:
        """Add a spec; DaemonError if the name is taken or a profile is unknown."""
        if spec.name in self.specs:
            raise DaemonError(f"daemon {spec.name} is already registered")
        unknown = sorted(spec.profiles - set(PROFILES))
        if unknown:
            raise DaemonError(f"daemon {spec.name} names unknown profiles {unknown}; known: {', '.join(PROFILES)}")
        if spec.leader_only and "leader_election" not in spec.depends_on:
            raise DaemonError(f"leader-only daemon {spec.name} must depend on leader_election")
        self.specs[spec.name] = spec

    def for_profile(self, profile: str) -> list[DaemonSpec]:
        """The daemons of `profile` in dependency order; DaemonError on a cycle or a dependency outside it."""
        if profile not in PROFILES:
            raise DaemonError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
        return order(spec for spec in self.specs.values() if profile in spec.profiles)


def _profiles(*names: str) -> frozenset[str]:
    return frozenset((*names, "full"))


_BUILTIN = (
    DaemonSpec(
        "leader_election",
        "zeroloop.cluster.leases:leader_election_daemon",
        "acquires and renews the leader lease; leader-only daemons run only while it is held",
        _profiles("coordinator"),
        layer=Layer.FOUNDATIONAL,
        critical=True,
    ),
    DaemonSpec(
        "node_heartbeat",
        "zeroloop.cluster.agent:node_agent_daemon",
        "registers this node (resources, GPUs) and heartbeats its utilisation",
        _profiles(*WORKER_PROFILES),
        layer=Layer.FOUNDATIONAL,
        critical=True,
    ),
    DaemonSpec(
        "event_consumers",
        "zeroloop.daemons.adapters:event_consumers_daemon",
        "runs this process's durable event consumers",
        _profiles("coordinator", "minimal"),
        layer=Layer.FOUNDATIONAL,
        critical=True,
    ),
    DaemonSpec(
        "dlq_retry",
        "zeroloop.daemons.adapters:dlq_retry_daemon",
        "re-delivers dead-lettered events with backoff",
        _profiles("coordinator"),
        depends_on=("leader_election", "event_consumers"),
        leader_only=True,
    ),
    DaemonSpec(
        "event_retention",
        "zeroloop.daemons.adapters:event_retention_daemon",
        "prunes the event log by age and count",
        _profiles("coordinator"),
        depends_on=("leader_election",),
        leader_only=True,
    ),
    DaemonSpec(
        "queue_reaper",
        "zeroloop.daemons.adapters:queue_reaper_daemon",
        "re-queues jobs whose lease expired",
        _profiles("coordinator"),
        depends_on=("leader_election",),
        leader_only=True,
        critical=True,
    ),
    DaemonSpec(
        "node_lost",
        "zeroloop.cluster.agent:node_lost_daemon",
        "marks silent nodes lost, publishes NODE_LOST and re-queues their jobs",
        _profiles("coordinator"),
        depends_on=("leader_election",),
        leader_only=True,
        critical=True,
    ),
    DaemonSpec(
        "health_monitor",
        "zeroloop.cluster.health:health_monitor_daemon",
        "moves open circuits to half-open, scores system health, applies the pause rule",
        _profiles("coordinator"),
        depends_on=("leader_election",),
        layer=Layer.APPLICATION,
        leader_only=True,
    ),
    DaemonSpec(
        "operations",
        "zeroloop.cluster.activity:operations_daemon",
        "feeds circuit breakers and job counters from queue events; sends operational alerts",
        _profiles("coordinator"),
        depends_on=("leader_election",),
        layer=Layer.APPLICATION,
        leader_only=True,
    ),
    DaemonSpec(
        "idle_shutdown",
        "zeroloop.cluster.idle:idle_shutdown_daemon",
        "drains and terminates idle rented nodes through their provider",
        _profiles("coordinator"),
        depends_on=("leader_election",),
        layer=Layer.APPLICATION,
        leader_only=True,
    ),
)


def default_registry() -> Registry:
    """A fresh registry holding zeroloop's built-in daemons."""
    registry = Registry()
    for spec in _BUILTIN:
        registry.add(spec)
    return registry
