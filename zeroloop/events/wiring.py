"""Who publishes and who consumes each event type, declared next to the code that does it.

Every part of zeroloop that publishes events declares the types it emits, and every
consumer the types it handles, with `declare()` at import time of its module. The
wiring check compares the two: an event type that is published but consumed by nobody,
or consumed but never published, is the failure the seeds' system kept having, and
`zeroloop doctor` fails listing it. `PARTICIPANTS` names every module that declares,
so the check sees all of them whatever has been imported so far.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from zeroloop.events.catalogue import EVENT_TYPES

# Every module that calls declare(); the wiring check imports them all.
PARTICIPANTS: list[str] = [
    # artifacts and pipeline
    "zeroloop.artifacts.repository",
    "zeroloop.pipeline.registry",
    "zeroloop.pipeline.coordinator",
    "zeroloop.pipeline.progress",
    "zeroloop.pipeline.executor",
    "zeroloop.pipeline.daemons",
    "zeroloop.cluster.activity",
    "zeroloop.cluster.alerts",
    "zeroloop.queue.manager",
    # cluster and daemons
    "zeroloop.daemons.manager",
    "zeroloop.cluster.leases",
    "zeroloop.cluster.nodes",
    "zeroloop.cluster.breakers",
    "zeroloop.cluster.idle",
    "zeroloop.cluster.fleet",
]


@dataclass(frozen=True)
class Declaration:
    """What one producer or consumer says it publishes (`emits`) and handles (`handles`)."""

    name: str
    emits: frozenset[str]
    handles: frozenset[str]


_declared: dict[str, Declaration] = {}


def declare(name: str, *, emits: tuple[str, ...] = (), handles: tuple[str, ...] = ()) -> Declaration:
    """Record what `name` emits and handles; unknown event types fail at import, not at run time."""
    unknown = sorted((set(emits) | set(handles)) - set(EVENT_TYPES))
    if unknown:
        raise AssertionError(f"{name} declares unknown event types: {', '.join(unknown)}")
    declaration = Declaration(name, frozenset(emits), frozenset(handles))
    existing = _declared.get(name)
    if existing is not None and existing != declaration:
        raise AssertionError(f"{name} is declared twice with different event types")
    _declared[name] = declaration
    return declaration


@dataclass(frozen=True)
class WiringReport:
    """The outcome of the wiring check; `ok` when nothing is unconsumed or unpublished."""

    unconsumed: dict[str, list[str]]
    unpublished: dict[str, list[str]]

    @property
    def ok(self) -> bool:
        """Whether every published type has a consumer and every consumed type a producer."""
        return not self.unconsumed and not self.unpublished


def declarations() -> list[Declaration]:
    """Every declaration, after importing every participant module."""
    for module in PARTICIPANTS:
        importlib.import_module(module)
    return sorted(_declared.values(), key=lambda declaration: declaration.name)


def check_wiring() -> WiringReport:
    """Compare what is published with what is consumed, by event type, over every participant."""
    return compare(declarations())


def compare(given: list[Declaration]) -> WiringReport:
    """Compare what `given` publish with what they consume, by event type."""
    producers: dict[str, list[str]] = {}
    consumers: dict[str, list[str]] = {}
    for declaration in given:
        for event_type in declaration.emits:
            producers.setdefault(event_type, []).append(declaration.name)
        for event_type in declaration.handles:
            consumers.setdefault(event_type, []).append(declaration.name)
    return WiringReport(
        unconsumed={event: names for event, names in sorted(producers.items()) if event not in consumers},
        unpublished={event: names for event, names in sorted(consumers.items()) if event not in producers},
    )
