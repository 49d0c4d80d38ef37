"""The declarative table of daemons and the profiles that run them.

A `DaemonSpec` says what a daemon is (name, factory), what it needs (dependencies,
layer), how it is supervised (restart policy, critical) and where it runs (profiles,
leader-only). `DaemonTable` is a plain value: add specs to it and ask it for a profile's
daemons in dependency order. zeroloop's own daemons are declared once, with their
factories as callables, in `zeroloop.app.daemon_table()`, where the App is assembled.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, Generic, TypeVar

from zeroloop.daemons.daemon import Daemon, DaemonContext, DaemonParts
from zeroloop.errors import DaemonError
from zeroloop.profiles import PROFILES

# A spec is contravariant in the parts its factory takes: a factory that needs only a
# worker's parts may be run by a process that has all of the App's.
Parts_contra = TypeVar("Parts_contra", bound=DaemonParts, contravariant=True)
Factory = Callable[[DaemonContext[Parts_contra]], Daemon]


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
class DaemonSpec(Generic[Parts_contra]):
    """One daemon, declared: `factory` is a callable or a dotted path `module:function`.

    `Parts_contra` is what the factory receives (`DaemonContext[Parts_contra]`): the worker profiles'
    daemons are `DaemonSpec[WorkerParts]`, the others `DaemonSpec[AppParts]`.
    """

    name: str
    factory: Factory[Parts_contra] | str
    description: str
    profiles: frozenset[str]
    depends_on: tuple[str, ...] = ()
    layer: Layer = Layer.CORE
    restart: RestartPolicy = RestartPolicy.ALWAYS
    critical: bool = False
    leader_only: bool = False

    def build(self, context: DaemonContext[Parts_contra]) -> Daemon:
        """Resolve the factory (importing it now) and construct a fresh daemon instance."""
        factory: Factory[Parts_contra] = resolve(self.factory)
        return factory(context)


def resolve(factory: Factory[Any] | str) -> Factory[Any]:
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


S = TypeVar("S", bound=DaemonSpec[Any])


def order(specs: Iterable[S]) -> list[S]:
    """The specs in dependency order (stable otherwise); DaemonError on a cycle or an unknown dependency."""
    by_name: dict[str, S] = {}
    for spec in specs:
        if spec.name in by_name:
            raise DaemonError(f"daemon {spec.name} is declared twice")
        by_name[spec.name] = spec
    for spec in by_name.values():
        missing = [dep for dep in spec.depends_on if dep not in by_name]
        if missing:
            raise DaemonError(f"daemon {spec.name} depends on {', '.join(missing)}, which is not in the same set")
    done: list[S] = []
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


T = TypeVar("T", bound=DaemonParts)


@dataclass
class DaemonTable(Generic[T]):
    """A set of daemon specs; `for_profile` answers which run in a profile and in what order."""

    specs: dict[str, DaemonSpec[T]] = field(default_factory=dict)

    def add(self, spec: DaemonSpec[T]) -> None:
        """Add a spec; DaemonError if the name is taken or a profile is unknown."""
        if spec.name in self.specs:
            raise DaemonError(f"daemon {spec.name} is already registered")
        unknown = sorted(spec.profiles - set(PROFILES))
        if unknown:
            raise DaemonError(f"daemon {spec.name} names unknown profiles {unknown}; known: {', '.join(PROFILES)}")
        if spec.leader_only and "leader_election" not in spec.depends_on:
            raise DaemonError(f"leader-only daemon {spec.name} must depend on leader_election")
        self.specs[spec.name] = spec

    def for_profile(self, profile: str) -> list[DaemonSpec[T]]:
        """The daemons of `profile` in dependency order; DaemonError on a cycle or a dependency outside it."""
        if profile not in PROFILES:
            raise DaemonError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
        return order(spec for spec in self.specs.values() if profile in spec.profiles)


def profiles(*names: str) -> frozenset[str]:
    """The named profiles plus `full`, which runs everything."""
    return frozenset((*names, "full"))
