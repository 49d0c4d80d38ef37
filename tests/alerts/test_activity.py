"""Operational consumers: activity feeding breakers and counters, and alerts, on both backends."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from zeroloop.alerts.activity import ActivityRecorder
from zeroloop.alerts.rules import HANDLES, AlertError, Alerts, summary
from zeroloop.cluster.breakers import BreakerState, CircuitBreakers, node_key, stage_key
from zeroloop.config import AlertSettings, HealthSettings, load_settings
from zeroloop.errors import ConfigError
from zeroloop.events import catalogue
from zeroloop.events.bus import Event, EventBus
from zeroloop.store.database import Store
from zeroloop.store.queries import job_stats

_ids = itertools.count(1)


def _event(event_type: str, payload: dict[str, Any]) -> Event:
    catalogue.validate(event_type, payload)
    return Event(next(_ids), event_type, payload, "test", "n1", 100.0)


def _job(event_type: str, job_type: str = "selfplay", **extra: Any) -> Event:
    return _event(event_type, {"config_key": "c4", "job_id": 1, "job_type": job_type, **extra})


@pytest.fixture
def recorder(store: Store) -> ActivityRecorder:
    bus = EventBus(store, node="n1", source="test")
    breakers = CircuitBreakers(store, bus, HealthSettings(breaker_failure_threshold=2))
    return ActivityRecorder(store, breakers)


def test_failures_open_the_node_and_stage_circuits_and_success_keeps_them_closed(recorder: ActivityRecorder) -> None:
    recorder.handle(_job("JOB_COMPLETED", node="w1"))
    assert recorder.breakers.get(node_key("w1")).state is BreakerState.CLOSED
    recorder.handle(_job("JOB_FAILED", node="w1", error="CUDA error", retryable=True))
    recorder.handle(_job("JOB_FAILED", node="w1", error="CUDA error", retryable=True))
    assert recorder.breakers.get(node_key("w1")).state is BreakerState.OPEN
    assert recorder.breakers.get(stage_key("selfplay")).state is BreakerState.OPEN


def test_a_vanished_machine_counts_against_the_node_only(recorder: ActivityRecorder) -> None:
    for _ in range(2):
        recorder.handle(_job("JOB_LEASE_EXPIRED", node="w2"))
    assert recorder.breakers.get(node_key("w2")).state is BreakerState.OPEN
    assert recorder.breakers.get(stage_key("selfplay")).state is BreakerState.CLOSED
    recorder.handle(_event("NODE_REGISTERED", {"node": "w2", "host": "h", "provider": "vast"}))
    assert recorder.breakers.get(node_key("w2")).state is BreakerState.CLOSED


def test_a_node_whose_full_disk_has_room_again_is_not_idled_for_the_recovery_time(recorder: ActivityRecorder) -> None:
    # Jobs failed on a full disk opened the node's circuit; once the node says its disk has room,
    # it takes work again at once rather than after health.breaker_recovery_s.
    for _ in range(2):
        recorder.handle(_job("JOB_FAILED", node="w3", error="No space left on device", retryable=True))
    assert recorder.breakers.get(node_key("w3")).state is BreakerState.OPEN
    recorder.handle(_event("DISK_SPACE_RECOVERED", {"node": "w3", "disk_pct": 60.0}))
    assert recorder.breakers.get(node_key("w3")).state is BreakerState.CLOSED
    assert recorder.breakers.allow(node_key("w3"))


def test_every_job_event_is_counted(recorder: ActivityRecorder, store: Store) -> None:
    recorder.handle(_job("JOB_QUEUED", "train", priority=1))
    recorder.handle(_job("JOB_CLAIMED", "train", node="w1", token=1, attempt=1))
    recorder.handle(_job("JOB_CANCELLED", "train"))
    recorder.handle(_job("JOB_DEAD", "train", error="boom"))
    with store.read() as conn:
        (row,) = job_stats.all_stats(conn)
    assert (row["queued"], row["claimed"], row["cancelled"], row["dead"], row["completed"]) == (1, 1, 1, 1, 0)


def _examples() -> dict[str, dict[str, Any]]:
    return {
        "DAEMON_CRASH_LOOP": {"node": "n1", "daemon": "pipeline", "restarts": 5, "last_error": "boom"},
        "NODE_LOST": {"node": "w1", "silent_s": 61.0},
        "NODE_IDLE_SHUTDOWN": {"node": "w1", "provider": "vast", "idle_s": 900.0, "dry_run": True},
        "LEADER_ELECTED": {"role": "leader", "node": "n1", "token": 3},
        "LEADER_LOST": {"role": "leader", "node": "n1", "token": 3},
        "CIRCUIT_OPENED": {"key": "node:w1", "failures": 3},
        "CIRCUIT_CLOSED": {"key": "node:w1"},
        "ARTIFACT_CORRUPT": {"artifact_sha256": "a" * 64, "location": "s3://b/x"},
        "BACKPRESSURE_CHANGED": {"queue_type": "selfplay", "level": "HARD", "previous": "SOFT", "depth": 900},
        "JOB_DEAD": {"config_key": "c4", "job_id": 7, "job_type": "train", "error": "oom"},
        "PIPELINE_PAUSED": {"config_key": "c4", "reason": "system health"},
        "NODE_LAUNCHED": {"pool": "gpu", "node": "gpu-1", "provider_id": "1234"},
        "NODE_LAUNCH_FAILED": {"pool": "gpu", "node": "gpu-1", "reason": "no capacity"},
        "NODE_TERMINATED": {"node": "gpu-1", "pool": "gpu", "cost": 1.25},
        "FLEET_ORPHAN_FOUND": {"pool": "gpu", "provider_id": "99", "action": "report"},
        "FLEET_BUDGET_REACHED": {"pool": "gpu", "budget_per_hour": 2.0, "cost_per_hour": 2.0, "refused": 1},
        "MODEL_PROMOTED": {"config_key": "c4", "model_id": "m1", "artifact_sha256": "b" * 64, "reason": "rollback"},
        "PROMOTION_STALLED": {"config_key": "c4", "hours": 25.0, "last_promotion_at": 1.0, "model_id": "m1"},
        "DEAD_LETTERS_GROWING": {"letters": 3, "previous": 1},
        "GARBAGE_COLLECTED": {"counts": {"jobs": 40, "game_batch": 3}, "bytes_freed": 2_000_000},
        "DISK_SPACE_LOW": {"node": "w1", "disk_pct": 93.5, "evicted_bytes": 10**9, "selfplay_refused": True},
        "BACKUP_CREATED": {"backup_id": "20261201-120000", "store_bytes": 10**6, "artifacts": 12, "pruned": ["old"]},
        "PIPELINE_RESUMED": {"config_key": "c4", "reason": "system health recovered"},
        "DISK_SPACE_RECOVERED": {"node": "w1", "disk_pct": 60.0},
        "EVACUATION_FAILED": {"node": "w1", "error": "OSError: [Errno 28] No space left on device: '/shared/x'"},
        "PLATEAU_CHANGED": {"config_key": "c4", "plateau": True, "gain_elo": 3.0, "rounds": 5, "reason": "flat"},
        "QUALITY_WARNING": {"config_key": "c4", "warnings": ["draw rate 0.97 over 0.95"]},
    }


def test_every_alert_type_has_a_one_line_summary() -> None:
    examples = _examples()
    assert set(examples) == set(HANDLES)
    for event_type, payload in examples.items():
        line = summary(_event(event_type, payload))
        assert line and "\n" not in line


def test_alert_command_receives_the_summary(tmp_path: Path) -> None:
    target = tmp_path / "alerts.txt"
    alerts = Alerts(AlertSettings(command=f"printf '%s|%s\\n' {{event}} {{summary}} >> {target}"))
    alerts.handle(_event("NODE_LOST", _examples()["NODE_LOST"]))
    assert target.read_text() == "NODE_LOST|node w1 lost (silent for 61 s); its jobs were re-queued\n"


def test_failing_alert_command_raises_so_the_bus_retries_it() -> None:
    alerts = Alerts(AlertSettings(command="exit 3"))
    with pytest.raises(AlertError, match="exited 3"):
        alerts.handle(_event("CIRCUIT_CLOSED", {"key": "stage:train"}))


def test_unknown_placeholder_in_the_alert_command_is_refused(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZEROLOOP_ALERTS__COMMAND", "notify {message}")
    with pytest.raises(ConfigError, match=r"alerts\.command"):
        load_settings()
