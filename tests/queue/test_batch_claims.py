"""Batched claims on both backends: up to N jobs in one statement, never a job to two claimers, limits kept."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import FakeClock
from tests.queue.conftest import event_log, queue_settings
from zeroloop.errors import StaleLeaseError
from zeroloop.events.bus import EventBus
from zeroloop.queue.jobs import JobStatus
from zeroloop.queue.manager import Completion, JobQueue
from zeroloop.store.database import Store


def test_a_batch_claim_leases_up_to_n_jobs_in_claim_order(queue: JobQueue, store: Store) -> None:
    low = [queue.enqueue("selfplay", "c4_2p", {"n": n}).id for n in range(3)]
    high = queue.enqueue("selfplay", "c4_2p", {"n": 9}, priority=5).id
    leases = queue.claim_many("w1", types=["selfplay"], limit=3)
    assert [lease.job.id for lease in leases] == [high, low[0], low[1]]
    assert all(lease.job.status is JobStatus.RUNNING and lease.job.lease_node == "w1" for lease in leases)
    assert all(lease.token == 1 for lease in leases)
    rest = queue.claim_many("w1", types=["selfplay"], limit=10)
    assert [lease.job.id for lease in rest] == [low[2]]
    assert queue.claim_many("w1", types=["selfplay"], limit=10) == []
    claimed = [payload["job_id"] for _type, payload in event_log(store, "JOB_CLAIMED")]
    assert sorted(claimed) == sorted([*low, high])


def test_a_batch_takes_no_more_of_a_limited_type_per_config_than_its_limit(queue: JobQueue) -> None:
    trains = [queue.enqueue("train", key, {"i": n}).id for key in ("a_2p", "b_2p") for n in range(2)]
    queue.enqueue("selfplay", "a_2p", {"n": 1})
    leases = queue.claim_many("w1", limit=10)
    taken = Counter((lease.job.type, lease.job.config_key) for lease in leases)
    assert taken == {("train", "a_2p"): 1, ("train", "b_2p"): 1, ("selfplay", "a_2p"): 1}
    assert {lease.job.id for lease in leases if lease.job.type == "train"} == {trains[0], trains[2]}
    assert queue.claim_many("w1", types=["train"], limit=10) == []  # one of each config runs already


def test_an_unregistered_node_claims_nothing_when_registration_is_required(queue: JobQueue, store: Store) -> None:
    queue.enqueue("selfplay", "c4_2p", {"n": 1})
    assert queue.claim_many("stranger", limit=5, registered=True) == []
    assert queue.claim("stranger", registered=True) is None
    assert queue.claim("stranger") is not None  # a direct worker on a trusted network need not register


def test_complete_and_claim_many_reports_one_job_and_leases_the_next_batch(queue: JobQueue) -> None:
    ids = [queue.enqueue("selfplay", "c4_2p", {"n": n}).id for n in range(5)]
    first = queue.claim("w1")
    assert first is not None
    done, leases = queue.complete_and_claim_many(first.job.id, first.token, {"ok": 1}, node="w1", limit=3)
    assert done.status is JobStatus.COMPLETED and done.result == {"ok": 1}
    assert [lease.job.id for lease in leases] == ids[1:4]
    with pytest.raises(StaleLeaseError):  # a stale token refuses the completion and claims nothing
        queue.complete_and_claim_many(first.job.id, first.token, None, node="w1", limit=3)
    assert [lease.job.id for lease in queue.claim_many("w1", limit=3)] == [ids[4]]


def test_complete_many_commits_the_current_leases_and_refuses_only_the_stale_ones(
    queue: JobQueue, clock: FakeClock
) -> None:
    for n in range(3):
        queue.enqueue("selfplay", "c4_2p", {"n": n})
    leases = queue.claim_many("w1", limit=3)
    outcomes = queue.complete_many(
        [
            Completion(leases[0].job.id, leases[0].token, {"n": 0}),
            Completion(leases[1].job.id, leases[1].token + 7, {"n": 1}),  # not this attempt's token
            Completion(leases[2].job.id, leases[2].token, {"n": 2}),
        ]
    )
    assert isinstance(outcomes[1], StaleLeaseError)
    assert [getattr(done, "status", None) for done in (outcomes[0], outcomes[2])] == [JobStatus.COMPLETED] * 2
    assert queue.get(leases[1].job.id).status is JobStatus.RUNNING
    assert queue.get(leases[2].job.id).result == {"n": 2}


def test_concurrent_batch_claims_never_lease_a_job_twice(store: Store, tmp_path: Path) -> None:
    """Four claimers in threads, each with its own queue, take batches of 7 until 120 jobs are gone."""
    settings = queue_settings(tmp_path, soft_limit=500, hard_limit=1000)

    def make(node: str) -> JobQueue:
        return JobQueue(store, EventBus(store, node=node, source="test"), settings)

    total = 120
    make("producer").enqueue_many(
        [{"job_type": "selfplay", "config_key": "c4_2p", "payload": {"n": n}} for n in range(total)]
    )
    taken: dict[str, list[int]] = {}
    failures: list[BaseException] = []
    start = threading.Barrier(4)

    def claimer(node: str) -> None:
        queue = make(node)
        mine: list[int] = []
        try:
            start.wait(timeout=60)
            for _ in range(total):  # bounded: each round takes at least one job until none is left
                leases = queue.claim_many(node, types=["selfplay"], limit=7)
                if not leases:
                    break
                mine.extend(lease.job.id for lease in leases)
                outcomes = queue.complete_many([Completion(lease.job.id, lease.token) for lease in leases])
                assert all(not isinstance(outcome, Exception) for outcome in outcomes), outcomes
        except BaseException as exc:  # reported below: a thread's failure must fail the test
            failures.append(exc)
        taken[node] = mine

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not failures, failures
    everything: list[Any] = [job for jobs in taken.values() for job in jobs]
    assert len(everything) == total and len(set(everything)) == total
    claimed = Counter(payload["job_id"] for _type, payload in event_log(store, "JOB_CLAIMED"))
    assert set(claimed.values()) == {1}
    completed = event_log(store, "JOB_COMPLETED")
    assert len(completed) == total
