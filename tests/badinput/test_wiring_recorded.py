"""What the code really publishes and consumes, recorded over the whole test suite, against the catalogue.

The session-wide recording (tests/conftest.py) notes each event type that a zeroloop
module publishes and each type a zeroloop consumer subscribes to. This module runs last;
with the whole suite collected, every catalogue type must have been really published
and really consumed, and the hand-kept declarations must say the same as the recording.
"""

from __future__ import annotations

import pytest

from zeroloop.cli import doctor
from zeroloop.config import Settings
from zeroloop.events import wiring
from zeroloop.events.catalogue import EVENT_TYPES


def test_the_comparison_names_what_nothing_publishes_or_consumes() -> None:
    declared = [wiring.Declaration("p", frozenset({"NODE_LOST", "JOB_DEAD"}), frozenset())]
    recording = wiring.Recording(
        published={name: {"zeroloop.x"} for name in EVENT_TYPES if name != "NODE_LOST"},
        consumed={name: {"c"} for name in EVENT_TYPES if name != "JOB_QUEUED"},
    )
    problems = wiring.compare_recording(recording, declared)
    assert "NODE_LOST: no zeroloop code published it" in "\n".join(problems)
    assert "JOB_QUEUED: no zeroloop consumer subscribed to it" in "\n".join(problems)
    assert "NODE_LOST: declared as emitted, but never published" in problems
    assert any(p.startswith("JOB_QUEUED: published by zeroloop.x without a declare") for p in problems)


def test_only_zeroloop_code_is_recorded() -> None:
    recording = wiring.start_recording()
    try:
        wiring.record_publish("NODE_LOST")  # called from a test module: not zeroloop's own code
        wiring.record_subscription("test-consumer", ("NODE_LOST",), print)
        wiring.record_subscription("zl-consumer", ("JOB_DEAD",), wiring.declarations)
    finally:
        wiring.stop_recording()
    assert recording.published == {}
    assert recording.consumed == {"JOB_DEAD": {"zl-consumer"}}


def test_every_catalogued_type_is_really_published_and_consumed(
    wiring_recording: wiring.Recording, full_suite: bool
) -> None:
    if not full_suite:
        pytest.skip("the recording covers only part of the suite: this check runs with the whole suite")
    problems = wiring.compare_recording(wiring_recording)
    assert not problems, "\n".join(problems)


def test_doctor_fails_a_catalogue_type_nobody_declares(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wiring, "check_wiring", lambda participants=(): wiring.WiringReport({}, {}, ["NODE_LOST"]))
    findings = list(doctor.check_event_wiring(settings))
    assert [(f.name, f.verdict) for f in findings] == [("event NODE_LOST", doctor.Verdict.FAIL)]
    assert "no participant declares" in findings[0].detail
