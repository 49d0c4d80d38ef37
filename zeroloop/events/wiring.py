"""Who publishes and who consumes each event type, declared next to the code that does it.

Every part of zeroloop that publishes events declares the types it emits, and every
consumer the types it handles, with `declare()` at import time of its module. The
wiring check compares the two: an event type that is published but consumed by nobody,
or consumed but never published, is the failure the seeds' system kept having, and
`zeroloop doctor` fails listing it. The participants are found from the daemon table
(`zeroloop.app.event_participants`): importing each daemon's factory module imports
everything it publishes or consumes through, so no list of modules is kept by hand.

Declarations are only claims, so they are checked against what the code really does: a
`Recording` (started by the test suite, see tests/conftest.py) notes every event type
that zeroloop's own modules publish through the bus and every type a consumer defined in
zeroloop subscribes to, and `compare_recording` reports each catalogue type that nothing
really publishes or consumes, and each declaration that the recording contradicts.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from zeroloop.events.catalogue import EVENT_TYPES, EXTERNAL_PRODUCERS


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
    """The outcome of the wiring check; `ok` when nothing is unconsumed, unpublished or undeclared."""

    unconsumed: dict[str, list[str]]
    unpublished: dict[str, list[str]]
    undeclared: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every published type has a consumer, every consumed type a producer, and every type a participant."""
        return not self.unconsumed and not self.unpublished and not self.undeclared


def declarations(participants: Iterable[str] = ()) -> list[Declaration]:
    """Every declaration made so far, after importing the `participants` modules (their imports declare too)."""
    for module in participants:
        importlib.import_module(module)
    return sorted(_declared.values(), key=lambda declaration: declaration.name)


def check_wiring(participants: Iterable[str] = ()) -> WiringReport:
    """Compare what is published with what is consumed, by event type, over every participant."""
    return compare(declarations(participants))


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
        unpublished={
            event: names
            for event, names in sorted(consumers.items())
            if event not in producers and event not in EXTERNAL_PRODUCERS
        },
        undeclared=sorted(set(EVENT_TYPES) - set(producers) - set(consumers)),
    )


@dataclass
class Recording:
    """Event types zeroloop's own code really published (type -> modules) and subscribed to (type -> consumers)."""

    published: dict[str, set[str]] = field(default_factory=dict)
    consumed: dict[str, set[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, dict[str, list[str]]]:
        """Plain data, for writing the recording to a file."""
        return {
            "published": {key: sorted(value) for key, value in sorted(self.published.items())},
            "consumed": {key: sorted(value) for key, value in sorted(self.consumed.items())},
        }


# The recordings in progress, innermost last; each publish or subscription goes to all of them.
_active: list[Recording] = []
# Frames of these modules are the bus's own plumbing, not the code that decided to publish.
_PLUMBING = ("zeroloop.events.bus", "zeroloop.events.wiring")
THREAD_PUBLISHER = "(a worker thread)"


def start_recording() -> Recording:
    """Begin a recording of publishes and subscriptions in this process (the test suite does this); they nest."""
    _active.append(Recording())
    return _active[-1]


def stop_recording() -> None:
    """Stop the innermost recording; the Recording that `start_recording` returned keeps what it saw."""
    if _active:
        _active.pop()


def record_publish(event_type: str) -> None:
    """Note that `event_type` is being published, unless a test publishes it itself (no-op unless recording).

    The nearest calling frame of zeroloop or of the tests decides; a publish made through a
    worker thread (asyncio.to_thread) shows neither, and counts as zeroloop's own.
    """
    if not _active:
        return
    frame = sys._getframe(1)
    module = THREAD_PUBLISHER
    while frame is not None:
        name = str(frame.f_globals.get("__name__", ""))
        if name not in _PLUMBING and name.startswith(("zeroloop.", "tests.")):
            module = name
            break
        frame = frame.f_back  # type: ignore[assignment]
    if not module.startswith("tests."):
        for recording in _active:
            recording.published.setdefault(event_type, set()).add(module)


def record_subscription(name: str, types: Iterable[str], handler: Callable[..., Any]) -> None:
    """Note that consumer `name` takes `types`, when its handler is defined in zeroloop (no-op unless recording)."""
    if not _active:
        return
    owner = getattr(handler, "__self__", None)
    module = type(owner).__module__ if owner is not None else getattr(handler, "__module__", None)
    if module is None or not isinstance(module, str):
        module = type(handler).__module__
    if module.startswith("zeroloop."):
        for recording in _active:
            for event_type in types:
                recording.consumed.setdefault(event_type, set()).add(name)


def compare_recording(recording: Recording, given: list[Declaration] | None = None) -> list[str]:
    """What the recording says is wrong: catalogue types nothing really publishes or consumes, and false declarations.

    `given` defaults to every declaration (see `declarations`). An empty list means all is well.
    """
    declared = declarations() if given is None else given
    emits = {event for declaration in declared for event in declaration.emits}
    handles = {event for declaration in declared for event in declaration.handles}
    problems = []
    for event_type in sorted(EVENT_TYPES):
        if event_type not in recording.published and event_type not in EXTERNAL_PRODUCERS:
            problems.append(
                f"{event_type}: no zeroloop code published it; publish it, remove it from the catalogue, "
                "or list it in EXTERNAL_PRODUCERS"
            )
        if event_type not in recording.consumed:
            problems.append(f"{event_type}: no zeroloop consumer subscribed to it; consume it or remove it")
        if event_type in emits and event_type not in recording.published:
            problems.append(f"{event_type}: declared as emitted, but never published")
        if event_type in recording.published and event_type not in emits:
            modules = ", ".join(sorted(recording.published[event_type]))
            problems.append(f"{event_type}: published by {modules} without a declare(emits=...)")
        if event_type in handles and event_type not in recording.consumed:
            problems.append(f"{event_type}: declared as handled, but no consumer subscribed to it")
        if event_type in recording.consumed and event_type not in handles:
            names = ", ".join(sorted(recording.consumed[event_type]))
            problems.append(f"{event_type}: consumed by {names} without a declare(handles=...)")
    return problems
