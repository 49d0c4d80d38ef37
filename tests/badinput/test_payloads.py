"""NUL characters and oversized documents are refused the same way on both backends, and nothing is stored."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import make_app
from zeroloop.config import EventSettings
from zeroloop.errors import EventError, QueueError
from zeroloop.events.bus import EventBus
from zeroloop.queue.manager import JobQueue
from zeroloop.store.database import Store
from zeroloop.store.queries import events as event_queries

NUL = "\x00"


def _event_count(store: Store) -> int:
    with store.read() as conn:
        return len(event_queries.latest(conn, types=[], config_keys=None, limit=1000))


@pytest.mark.parametrize(
    "payload",
    [
        {"node": f"a{NUL}b", "silent_s": 1.0},
        {"node": "a", "silent_s": 1.0, "extra": 1},  # refused by the schema, for contrast
    ],
)
def test_a_bad_event_payload_is_refused_and_nothing_is_stored(bus: EventBus, store: Store, payload: dict) -> None:
    with pytest.raises(EventError):
        bus.publish("NODE_LOST", payload)
    assert _event_count(store) == 0


def test_nul_in_a_config_key_or_the_envelope_is_refused(bus: EventBus, store: Store) -> None:
    with pytest.raises(EventError, match="NUL"):
        bus.publish("PIPELINE_PAUSED", {"config_key": f"c{NUL}", "reason": "x"})
    with pytest.raises(EventError, match=r"dedup_key .*NUL"):
        bus.publish("NODE_LOST", {"node": "a", "silent_s": 1.0}, dedup_key=NUL)
    assert _event_count(store) == 0


def test_an_oversized_event_payload_is_refused_with_the_limit(bus: EventBus, store: Store) -> None:
    with pytest.raises(EventError, match=r"more than the limit of 4096.*max_payload_bytes"):
        bus.publish("PIPELINE_PAUSED", {"config_key": "c", "reason": "x" * 5000})
    bus.publish("PIPELINE_PAUSED", {"config_key": "c", "reason": "x" * 3000})
    assert _event_count(store) == 1


def test_the_app_takes_its_event_limit_from_the_settings(store_url: str, tmp_path: Path) -> None:
    assert EventSettings().max_payload_bytes == 64 * 1024
    with make_app(store_url, tmp_path, events=EventSettings(max_payload_bytes=2048)) as app:
        assert app.bus.max_payload_bytes == 2048
        with pytest.raises(EventError, match="limit of 2048"):
            app.bus.publish("PIPELINE_PAUSED", {"config_key": "c", "reason": "x" * 10_000_000})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"config_key": f"c{NUL}"}, "config_key contains a NUL"),
        ({"payload": {"k": f"v{NUL}"}}, "payload of a selfplay job contains a NUL"),
        ({"payload": {f"k{NUL}": 1}}, r"\(a key\) contains a NUL"),
        ({"payload": {"blob": "x" * 5000}}, "more than the limit of 4096"),
        ({"target_node": f"n{NUL}"}, "target_node contains a NUL"),
        ({"idempotency_key": f"k{NUL}"}, "idempotency_key contains a NUL"),
        ({"requires": {"labels": [f"gpu{NUL}"]}}, "label contains a NUL"),
        ({"payload": {"s": "\ud800"}}, "unpaired UTF-16 surrogate"),
    ],
)
def test_a_bad_job_is_refused_and_nothing_is_stored(queue: JobQueue, kwargs: dict, message: str) -> None:
    args = {"job_type": "selfplay", "config_key": "c", **kwargs}
    with pytest.raises(QueueError, match=message):
        queue.enqueue(**args)
    assert queue.list() == []


def test_a_bad_result_is_refused_and_the_job_stays_running(queue: JobQueue) -> None:
    job = queue.enqueue("selfplay", "c")
    lease = queue.claim("n1")
    assert lease is not None
    for result in ({"out": NUL}, {"out": "x" * 5000}, {"nan": float("nan")}):
        with pytest.raises(QueueError, match=f"result of job {job.id}"):
            queue.complete(job.id, lease.token, result)
    assert queue.get(job.id).status.value == "running"
    assert queue.complete(job.id, lease.token, {"out": "ok"}).result == {"out": "ok"}


def test_a_failure_text_with_nul_is_kept_visibly_and_bounded(queue: JobQueue) -> None:
    job = queue.enqueue("selfplay", "c")
    lease = queue.claim("n1")
    assert lease is not None
    failed = queue.fail(job.id, lease.token, f"bad{NUL}byte " + "y" * 10_000)
    assert failed.error is not None and failed.error.startswith("...") and len(failed.error) == 4000
    lease = queue.claim("n1")  # the retry backoff has not passed: nothing to claim yet
    assert lease is None
    short = queue.enqueue("selfplay", "d")
    held = queue.claim("n1", types=["selfplay"])
    assert held is not None and held.job.id == short.id
    assert queue.fail(short.id, held.token, f"bad{NUL}byte").error == "bad\\x00byte"
