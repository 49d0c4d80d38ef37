"""The wiring check on constructed declarations, and the doctor check that reports it."""

from __future__ import annotations

import pytest

from zeroloop.cli import doctor
from zeroloop.config import Settings
from zeroloop.events import wiring
from zeroloop.events.consumer import ConsumerSpec
from zeroloop.events.wiring import Declaration, WiringReport


def _declaration(name: str, emits: tuple[str, ...] = (), handles: tuple[str, ...] = ()) -> Declaration:
    return Declaration(name, frozenset(emits), frozenset(handles))


def test_compare_lists_unconsumed_and_unpublished() -> None:
    report = wiring.compare(
        [
            _declaration("queue", emits=("JOB_QUEUED", "JOB_DEAD")),
            _declaration("scheduler", handles=("JOB_QUEUED", "NODE_LOST")),
        ]
    )
    assert report.unconsumed == {"JOB_DEAD": ["queue"]}
    assert report.unpublished == {"NODE_LOST": ["scheduler"]}
    assert not report.ok
    paired = wiring.compare([_declaration("p", emits=("NODE_LOST",)), _declaration("c", handles=("NODE_LOST",))])
    assert not paired.unconsumed and not paired.unpublished
    # Every other catalogue type is declared by nobody, which the check reports too.
    assert "NODE_LOST" not in paired.undeclared and "JOB_DEAD" in paired.undeclared and not paired.ok


def test_every_catalogue_type_is_declared_by_a_participant() -> None:
    from zeroloop.app import event_participants

    participants = event_participants()
    assert "zeroloop.fleet.autoscaler" in participants  # found from the daemon table, not a list kept by hand
    report = wiring.check_wiring(participants)
    assert report.ok, report


def test_consumer_spec_declares_what_it_handles() -> None:
    spec = ConsumerSpec("tests.events.wiring_probe", print, types=("NODE_LOST",))
    assert spec.declare() == _declaration("tests.events.wiring_probe", handles=("NODE_LOST",))


def test_doctor_fails_listing_each_bad_type(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = WiringReport(unconsumed={"JOB_DEAD": ["queue"]}, unpublished={"NODE_LOST": ["scheduler"]})
    monkeypatch.setattr(wiring, "check_wiring", lambda participants=(): bad)
    findings = list(doctor.check_event_wiring(settings))
    assert [(f.name, f.verdict) for f in findings] == [
        ("event JOB_DEAD", doctor.Verdict.FAIL),
        ("event NODE_LOST", doctor.Verdict.FAIL),
    ]
    assert "consumed by nobody" in findings[0].detail and "published by nobody" in findings[1].detail
    monkeypatch.setattr(wiring, "check_wiring", lambda participants=(): WiringReport({}, {}))
    assert [f.verdict for f in doctor.check_event_wiring(settings)] == [doctor.Verdict.OK]
