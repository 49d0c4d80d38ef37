"""Queue guards that used to exist only on paper: dependents of a dead job, results from an expired lease."""

from __future__ import annotations

import pytest

from tests.helpers import FakeClock
from tests.queue.conftest import event_log
from zeroloop.errors import QueueError, StaleLeaseError
from zeroloop.queue.jobs import JobStatus
from zeroloop.queue.manager import JobQueue
from zeroloop.store.database import Store


def _kill(queue: JobQueue, job_id: int) -> None:
    lease = queue.claim("n1")
    assert lease is not None and lease.job.id == job_id
    queue.fail(job_id, lease.token, "boom", retryable=False)


def test_dependents_of_a_dead_job_die_with_the_reason_transitively(queue: JobQueue, store: Store) -> None:
    root = queue.enqueue("selfplay", "c")
    child = queue.enqueue("export", "c", depends_on=[root.id])
    grandchild = queue.enqueue("train", "c", depends_on=[child.id])
    other = queue.enqueue("selfplay", "c")
    _kill(queue, root.id)
    assert queue.get(child.id).status is JobStatus.DEAD
    assert queue.get(child.id).error == f"depends on job {root.id} which is dead"
    assert queue.get(grandchild.id).error == f"depends on job {child.id} which is dead"
    assert queue.get(other.id).status is JobStatus.QUEUED
    dead = [payload["job_id"] for _type, payload in event_log(store, "JOB_DEAD")]
    assert dead == [root.id, child.id, grandchild.id]


def test_cancelling_a_job_fails_its_dependents(queue: JobQueue) -> None:
    root = queue.enqueue("selfplay", "c")
    child = queue.enqueue("export", "c", depends_on=[root.id])
    queue.cancel(root.id)
    assert queue.get(child.id).status is JobStatus.DEAD
    assert queue.get(child.id).error == f"depends on job {root.id} which is cancelled"


def test_a_job_enqueued_on_a_dead_job_is_dead_at_once_and_retry_waits_for_the_dependency(queue: JobQueue) -> None:
    root = queue.enqueue("selfplay", "c", max_attempts=1)
    _kill(queue, root.id)
    late = queue.enqueue("export", "c", depends_on=[root.id])
    assert late.status is JobStatus.DEAD and late.error == f"depends on job {root.id} which is dead"
    with pytest.raises(QueueError, match=f"retry job {root.id} first"):
        queue.retry(late.id)
    queue.retry(root.id)
    assert queue.retry(late.id).status is JobStatus.QUEUED


def test_a_result_from_an_expired_lease_is_refused_before_the_reaper_runs(queue: JobQueue, clock: FakeClock) -> None:
    job = queue.enqueue("selfplay", "c")
    queue.enqueue("selfplay", "c")
    lease = queue.claim("n1")
    assert lease is not None and lease.job.id == job.id
    clock.advance(queue.settings.lease_s + 0.5)
    with pytest.raises(StaleLeaseError, match=r"lease expired 0\.5 s ago"):
        queue.complete(job.id, lease.token, {"late": True})
    with pytest.raises(StaleLeaseError, match="lease expired"):
        queue.complete_and_claim(job.id, lease.token, {"late": True}, node="n1")
    with pytest.raises(StaleLeaseError, match="lease expired"):
        queue.heartbeat(job.id, lease.token)
    assert queue.get(job.id).status is JobStatus.RUNNING and queue.get(job.id).result is None
    assert [j.status for j in queue.list(statuses=[JobStatus.QUEUED])] == [JobStatus.QUEUED]  # nothing claimed
    assert [j.id for j in queue.reap()] == [job.id]


def test_a_result_at_the_last_moment_of_its_lease_is_accepted(queue: JobQueue, clock: FakeClock) -> None:
    job = queue.enqueue("selfplay", "c")
    lease = queue.claim("n1")
    assert lease is not None
    clock.advance(queue.settings.lease_s)
    assert queue.complete(job.id, lease.token, {"ok": True}).status is JobStatus.COMPLETED
