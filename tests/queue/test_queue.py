"""The JobQueue manager on both backends: claims, leases, fencing, retries, dependencies, cancel, reaping."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa

from tests.helpers import FakeClock
from tests.queue.conftest import T0, event_log
from zeroloop.errors import QueueError, StaleLeaseError
from zeroloop.queue.jobs import Capabilities, JobStatus, Requirements, sources, transition
from zeroloop.queue.manager import JobQueue
from zeroloop.queue.reaper import Reaper
from zeroloop.store.database import Store


def test_transition_refuses_illegal_moves() -> None:
    assert transition(JobStatus.QUEUED, JobStatus.RUNNING) is JobStatus.RUNNING
    with pytest.raises(QueueError, match="cannot go from completed to queued"):
        transition(JobStatus.COMPLETED, JobStatus.QUEUED, 7)
    with pytest.raises(QueueError, match="from queued"):
        transition(JobStatus.QUEUED, JobStatus.COMPLETED)
    assert sources(JobStatus.COMPLETED) == {JobStatus.RUNNING}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"job_type": "Bad Type"}, "job type 'Bad Type' is invalid"),
        ({"config_key": ""}, "config_key"),
        ({"priority": 1.5}, "priority"),
        ({"payload": {"x": object()}}, "payload of a selfplay job is not a JSON document"),
        ({"requires": {"gpus": -1}}, "requires is invalid: gpus"),
        ({"requires": {"cores": 2}}, "requires is invalid: cores"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"timeout_s": -1.0}, "timeout_s"),
        ({"depends_on": [12345]}, "depends_on names jobs that do not exist: 12345"),
    ],
)
def test_enqueue_validates_with_clear_messages(queue: JobQueue, kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"job_type": "selfplay", "config_key": "c4_2p"}
    args.update(kwargs)
    job_type, config_key = args.pop("job_type"), args.pop("config_key")
    with pytest.raises(QueueError, match=message):
        queue.enqueue(job_type, config_key, **args)
    assert queue.stats() == {}


def test_enqueue_publishes_job_queued_and_idempotency_returns_the_first(queue: JobQueue, store: Store) -> None:
    first = queue.enqueue("selfplay", "c4_2p", {"games": 10}, idempotency_key="k1", priority=3)
    again = queue.enqueue("selfplay", "c4_2p", {"games": 99}, idempotency_key="k1")
    assert again.id == first.id and again.payload == {"games": 10}
    assert first.status is JobStatus.QUEUED and first.attempts == 0
    queued = event_log(store, "JOB_QUEUED")
    assert queued == [
        ("JOB_QUEUED", {"config_key": "c4_2p", "job_id": first.id, "job_type": "selfplay", "priority": 3})
    ]


def test_claim_orders_by_priority_then_fifo(queue: JobQueue) -> None:
    low = queue.enqueue("selfplay", "c", priority=0)
    high1 = queue.enqueue("selfplay", "c", priority=5)
    high2 = queue.enqueue("selfplay", "c", priority=5)
    order = []
    for _ in range(3):
        lease = queue.claim("n1")
        assert lease is not None
        order.append(lease.job.id)
    assert order == [high1.id, high2.id, low.id]
    assert queue.claim("n1") is None


def test_claim_filters_by_type_target_node_and_capabilities(queue: JobQueue) -> None:
    gpu = queue.enqueue("train", "c", requires=Requirements(gpus=1, memory_bytes=8 << 30, labels=frozenset({"a100"})))
    pinned = queue.enqueue("selfplay", "c", target_node="n2")
    queue.enqueue("evaluate", "c")
    assert queue.claim("n1", types=["train", "selfplay"]) is None
    assert queue.claim("n1", types=[]) is None
    weak = Capabilities(gpus=1, memory_bytes=4 << 30, labels=frozenset({"a100"}))
    assert queue.claim("n1", weak, types=["train"]) is None
    unlabelled = Capabilities(gpus=2, memory_bytes=16 << 30)
    assert queue.claim("n1", unlabelled, types=["train"]) is None
    strong = Capabilities(gpus=2, memory_bytes=16 << 30, labels=frozenset({"a100", "fast"}))
    lease = queue.claim("n1", strong, types=["train"])
    assert lease is not None and lease.job.id == gpu.id
    assert gpu.requires.satisfied_by(strong) and not gpu.requires.satisfied_by(weak)
    lease = queue.claim("n2", types=["selfplay"])
    assert lease is not None and lease.job.id == pinned.id
    lease = queue.claim("n1", types=["evaluate", "other"])
    assert lease is not None and lease.job.type == "evaluate"


def test_dependencies_hold_a_job_until_all_completed(queue: JobQueue) -> None:
    a = queue.enqueue("selfplay", "c")
    b = queue.enqueue("selfplay", "c")
    train = queue.enqueue("train", "c", depends_on=[a.id, b.id], priority=9)
    assert train.waiting_on == 2 and queue.dependencies(train.id) == [a.id, b.id]
    first = queue.claim("n1")
    assert first is not None and first.job.id == a.id
    queue.complete(first.job.id, first.token, {"games": 1})
    second = queue.claim("n1")
    assert second is not None and second.job.id == b.id  # train still waits on b
    assert queue.claim("n1") is None
    queue.complete(second.job.id, second.token)
    third = queue.claim("n1")
    assert third is not None and third.job.id == train.id
    # A dependency already completed does not count.
    later = queue.enqueue("export", "c", depends_on=[a.id])
    assert later.waiting_on == 0


def test_concurrency_limit_per_config(make_queue: Any) -> None:
    queue = make_queue(concurrency_per_config={"train": 1})
    t1 = queue.enqueue("train", "c4_2p")
    t2 = queue.enqueue("train", "c4_2p")
    other = queue.enqueue("train", "hex_2p")
    first = queue.claim("n1", types=["train"])
    assert first is not None and first.job.id == t1.id
    second = queue.claim("n2", types=["train"])
    assert second is not None and second.job.id == other.id  # c4_2p already runs one
    assert queue.claim("n3") is None
    queue.complete(first.job.id, first.token)
    third = queue.claim("n3")
    assert third is not None and third.job.id == t2.id


def test_open_circuit_breaker_stops_claims_until_recovery(queue: JobQueue, store: Store, clock: FakeClock) -> None:
    queue.enqueue("selfplay", "c")
    with store.transaction() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO circuit_breakers (key, state, failures, successes, opened_at, updated_at)"
                " VALUES ('node:n1', 'open', 3, 0, :t, :t)"
            ),
            {"t": clock()},
        )
    assert queue.claim("n1") is None
    clock.advance(queue.breaker_recovery_s + 1)  # recovered: counts as half-open, may take a trial job
    assert queue.claim("n1") is not None


def test_heartbeat_extends_up_to_the_timeout(make_queue: Any, clock: FakeClock) -> None:
    queue = make_queue(lease_s=10.0)
    job = queue.enqueue("selfplay", "c", timeout_s=25.0)
    lease = queue.claim("n1")
    assert lease is not None and lease.expires_at == T0 + 10.0
    clock.advance(8)
    assert queue.heartbeat(job.id, lease.token) == T0 + 18.0
    clock.advance(10)
    assert queue.heartbeat(job.id, lease.token) == T0 + 25.0  # never past claimed_at + timeout_s


def test_stale_token_is_refused_and_result_recorded_once(queue: JobQueue, clock: FakeClock, store: Store) -> None:
    job = queue.enqueue("selfplay", "c")
    old = queue.claim("n1")
    assert old is not None
    clock.advance(queue.settings.lease_s + 1)
    assert [j.id for j in queue.reap()] == [job.id]
    clock.advance(queue.settings.retry_max_s)
    new = queue.claim("n2")
    assert new is not None and new.token > old.token and new.job.attempts == 2
    with pytest.raises(StaleLeaseError, match="re-leased"):
        queue.complete(job.id, old.token, {"by": "n1"})
    with pytest.raises(StaleLeaseError):
        queue.heartbeat(job.id, old.token)
    with pytest.raises(StaleLeaseError):
        queue.fail(job.id, old.token, "late")
    done = queue.complete(job.id, new.token, {"by": "n2"})
    assert done.status is JobStatus.COMPLETED and done.result == {"by": "n2"}
    with pytest.raises(StaleLeaseError, match="completed, not running"):
        queue.complete(job.id, new.token, {"by": "n2 again"})
    assert queue.get(job.id).result == {"by": "n2"}
    assert [t for t, _ in event_log(store, "JOB_COMPLETED", "JOB_LEASE_EXPIRED")] == [
        "JOB_LEASE_EXPIRED",
        "JOB_COMPLETED",
    ]
    with pytest.raises(QueueError, match="no such job"):
        queue.complete(999, 1)


def test_complete_and_claim_reports_and_leases_the_next_in_one_transaction(queue: JobQueue, store: Store) -> None:
    first, second = queue.enqueue("selfplay", "c"), queue.enqueue("selfplay", "c")
    queue.enqueue("train", "c")
    lease = queue.claim("n1", types=["selfplay"])
    assert lease is not None and lease.job.id == first.id
    done, following = queue.complete_and_claim(lease.job.id, lease.token, {"games": 4}, node="n1", types=["selfplay"])
    assert done.status is JobStatus.COMPLETED and done.result == {"games": 4}
    assert following is not None and following.job.id == second.id and following.job.lease_node == "n1"
    # A stale token refuses both halves: nothing completed, nothing claimed, no event.
    before = event_log(store)
    with pytest.raises(StaleLeaseError):
        queue.complete_and_claim(first.id, lease.token, None, node="n1")
    assert event_log(store) == before and queue.stats()["train"] == {"queued": 1}
    last, none_left = queue.complete_and_claim(second.id, following.token, None, node="n1", types=["selfplay"])
    assert last.status is JobStatus.COMPLETED and none_left is None
    assert [(t, p["job_id"]) for t, p in event_log(store, "JOB_CLAIMED", "JOB_COMPLETED")] == [
        ("JOB_CLAIMED", first.id),
        ("JOB_COMPLETED", first.id),
        ("JOB_CLAIMED", second.id),
        ("JOB_COMPLETED", second.id),
    ]


def test_retryable_failures_back_off_then_die(queue: JobQueue, clock: FakeClock, store: Store) -> None:
    job = queue.enqueue("selfplay", "c", max_attempts=3)
    delays = []
    for attempt in (1, 2):
        lease = queue.claim("n1")
        assert lease is not None and lease.job.attempts == attempt
        failed = queue.fail(job.id, lease.token, f"boom {attempt}")
        assert failed.status is JobStatus.QUEUED
        delays.append(failed.run_after - clock())
        assert queue.claim("n1") is None  # not before the backoff has passed
        clock.advance(delays[-1])
    assert delays == [1.0, 2.0]
    lease = queue.claim("n1")
    assert lease is not None
    dead = queue.fail(job.id, lease.token, "boom 3")
    assert dead.status is JobStatus.DEAD and dead.error == "boom 3" and dead.attempts == 3
    assert queue.list(statuses=[JobStatus.DEAD])[0].id == job.id
    types = [t for t, _ in event_log(store, "JOB_FAILED", "JOB_DEAD")]
    assert types == ["JOB_FAILED", "JOB_FAILED", "JOB_FAILED", "JOB_DEAD"]
    assert queue.backoff_s(1) == 1.0 and queue.backoff_s(3) == 4.0 and queue.backoff_s(10) == 8.0


def test_non_retryable_failure_is_dead_at_once_and_retry_revives(queue: JobQueue, store: Store) -> None:
    job = queue.enqueue("selfplay", "c", max_attempts=5)
    lease = queue.claim("n1")
    assert lease is not None
    assert queue.fail(job.id, lease.token, "bad input", retryable=False).status is JobStatus.DEAD
    revived = queue.retry(job.id)
    assert revived.status is JobStatus.QUEUED and revived.attempts == 0
    assert queue.claim("n1") is not None
    with pytest.raises(QueueError, match="only dead or cancelled"):
        queue.retry(job.id)


def test_expired_leases_count_attempts_and_end_dead(queue: JobQueue, clock: FakeClock, store: Store) -> None:
    job = queue.enqueue("selfplay", "c", max_attempts=2)
    for _ in range(2):
        lease = queue.claim("n1")
        assert lease is not None
        assert queue.reap(lease.expires_at) == []  # not expired at its expiry instant
        reaped = queue.reap(lease.expires_at + 0.001)
        assert len(reaped) == 1
        clock.now = reaped[0].run_after
    assert queue.get(job.id).status is JobStatus.DEAD
    types = [t for t, _ in event_log(store, "JOB_LEASE_EXPIRED", "JOB_DEAD")]
    assert types == ["JOB_LEASE_EXPIRED", "JOB_LEASE_EXPIRED", "JOB_DEAD"]


def test_requeue_node_releases_only_that_nodes_leases(queue: JobQueue, store: Store) -> None:
    a = queue.enqueue("selfplay", "c")
    b = queue.enqueue("selfplay", "c")
    la, lb = queue.claim("lost"), queue.claim("alive")
    assert la is not None and lb is not None
    released = queue.requeue_node("lost")
    assert [(j.id, j.status) for j in released] == [(a.id, JobStatus.QUEUED)]
    assert queue.get(b.id).status is JobStatus.RUNNING
    assert event_log(store, "JOB_LEASE_EXPIRED")[0][1]["node"] == "lost"


def test_cancel_queued_and_running(queue: JobQueue, store: Store) -> None:
    a = queue.enqueue("selfplay", "c")
    b = queue.enqueue("selfplay", "c")
    assert queue.cancel(a.id).status is JobStatus.CANCELLED
    lease = queue.claim("n1")
    assert lease is not None and lease.job.id == b.id
    queue.cancel(b.id)
    with pytest.raises(StaleLeaseError, match="cancelled"):
        queue.complete(b.id, lease.token)
    with pytest.raises(QueueError, match="cannot go from cancelled to cancelled"):
        queue.cancel(a.id)
    assert len(event_log(store, "JOB_CANCELLED")) == 2
    assert queue.retry(a.id).status is JobStatus.QUEUED


def test_every_transition_publishes_in_its_transaction(queue: JobQueue, store: Store) -> None:
    job = queue.enqueue("selfplay", "c")
    with pytest.raises(RuntimeError), store.transaction():
        lease = queue.claim("n1")
        assert lease is not None
        raise RuntimeError("roll back the claim and its event")
    assert queue.get(job.id).status is JobStatus.QUEUED
    assert [t for t, _ in event_log(store)] == ["JOB_QUEUED"]
    lease = queue.claim("n1")
    assert lease is not None
    queue.complete(job.id, lease.token)
    claimed = event_log(store, "JOB_CLAIMED")[0][1]
    assert claimed == {
        "config_key": "c", "job_id": job.id, "job_type": "selfplay", "node": "n1", "token": lease.token, "attempt": 1
    }  # fmt: skip


def test_stats_and_list(queue: JobQueue) -> None:
    queue.enqueue("selfplay", "c")
    queue.enqueue("selfplay", "d")
    queue.enqueue("train", "c")
    assert queue.claim("n1", types=["train"]) is not None
    assert queue.stats() == {"selfplay": {"queued": 2}, "train": {"running": 1}}
    assert [j.config_key for j in queue.list(job_type="selfplay")] == ["d", "c"]
    assert len(queue.list(config_key="c")) == 2
    with pytest.raises(QueueError, match="no job 404"):
        queue.get(404)


def test_reaper_run_once_and_async_loop(queue: JobQueue, clock: FakeClock) -> None:
    queue.enqueue("selfplay", "c")
    lease = queue.claim("n1")
    assert lease is not None
    reaper = Reaper(queue, interval_s=0.01, clock=clock)
    assert reaper.run_once() == []
    clock.advance(queue.settings.lease_s + 1)
    assert len(reaper.run_once()) == 1

    async def loop() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(reaper.run(stop))
        await asyncio.sleep(0)
        stop.set()
        await asyncio.wait_for(task, timeout=10)

    asyncio.run(loop())
    assert reaper.reaped == 1


def test_enqueue_many_is_all_or_nothing(queue: JobQueue, store: Store) -> None:
    jobs = queue.enqueue_many(
        [
            {"job_type": "selfplay", "config_key": "c", "payload": {"n": 1}},
            {"job_type": "selfplay", "config_key": "c", "priority": 4, "idempotency_key": "x"},
            {"job_type": "train", "config_key": "c", "requires": {"gpus": 1}},
        ]
    )
    assert [j.priority for j in jobs] == [0, 4, 0] and jobs[2].requires.gpus == 1
    assert len(event_log(store, "JOB_QUEUED")) == 3
    with pytest.raises(QueueError, match="depends_on names jobs that do not exist"):
        queue.enqueue_many(
            [{"job_type": "export", "config_key": "c"}, {"job_type": "x", "config_key": "c", "depends_on": [999]}]
        )
    with pytest.raises(QueueError, match="unknown enqueue argument"):
        queue.enqueue_many([{"job_type": "export", "config_key": "c", "prio": 1}])
    with pytest.raises(QueueError, match="lacks 'config_key'"):
        queue.enqueue_many([{"job_type": "export"}])
    assert "export" not in queue.stats()


def test_enqueue_many_keeps_request_order_across_batched_and_single_inserts(queue: JobQueue, store: Store) -> None:
    first = queue.enqueue("export", "c")
    requests: list[dict[str, Any]] = [
        {"job_type": "selfplay", "config_key": "c", "payload": {"n": n}} for n in range(3)
    ]
    requests += [
        {"job_type": "train", "config_key": "c", "depends_on": [first.id]},
        {"job_type": "selfplay", "config_key": "c", "idempotency_key": "once"},
        {"job_type": "selfplay", "config_key": "c", "requires": {"labels": ["tpu"]}},
        {"job_type": "selfplay", "config_key": "c", "payload": {"n": 9}},
    ]
    jobs = queue.enqueue_many(requests)
    ids = [job.id for job in jobs]
    assert ids == sorted(ids) and ids[0] > first.id
    assert [job.payload.get("n") for job in jobs] == [0, 1, 2, None, None, None, 9]
    assert jobs[3].waiting_on == 1 and queue.dependencies(jobs[3].id) == [first.id]
    assert [p["job_id"] for _t, p in event_log(store, "JOB_QUEUED")] == [first.id, *ids]
    # No labels is SQL NULL, which the claim reads as "needs none"; the labelled job waits for a tpu node.
    leases = [queue.claim("n1", types=["selfplay"]) for _ in range(6)]
    assert [lease.job.id if lease else None for lease in leases] == [ids[0], ids[1], ids[2], ids[4], ids[6], None]
    tpu = queue.claim("n2", Capabilities(labels=frozenset({"tpu"})), types=["selfplay"])
    assert tpu is not None and tpu.job.id == ids[5]
    assert queue.enqueue_many([{"job_type": "selfplay", "config_key": "c", "idempotency_key": "once"}])[0].id == ids[4]


@pytest.mark.parametrize("result", [0, 7, 1.5, -2.25, "0", True, None, [0], {"n": 0}])
def test_any_json_result_reads_back_as_it_was_given(queue: JobQueue, result: Any) -> None:
    # SQLite's numeric affinity turns the stored text of a bare JSON number into a number.
    queue.enqueue("selfplay", "c4", {"n": 1})
    lease = queue.claim("n1")
    assert lease is not None
    assert queue.complete(lease.job.id, lease.token, result).result == result
    assert queue.get(lease.job.id).result == result
