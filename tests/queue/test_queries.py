"""Contract tests of the job-queue store operations on both backends."""

from __future__ import annotations

from typing import Any

from zeroloop.store.database import Store
from zeroloop.store.queries import jobs as q


def _row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "type": "selfplay", "config_key": "c", "payload": {}, "priority": 0, "need_gpus": 0, "need_memory_bytes": 0,
        "need_labels": None, "target_node": None, "idempotency_key": None, "status": "queued", "attempts": 0,
        "max_attempts": 3, "timeout_s": 100.0, "run_after": 0.0, "lease_token": 0, "waiting_on": 0,
        "has_dependents": False, "created_at": 0.0, "updated_at": 0.0,
    }  # fmt: skip
    row.update(overrides)
    return row


def _id(conn: Any, row: dict[str, Any], depends_on: Any = ()) -> int:
    return int(q.insert_job(conn, row, depends_on)[0]["id"])


def _claim(conn: Any, node: str = "n", **overrides: Any) -> Any:
    args: dict[str, Any] = {"node": node, "now": 10.0, "lease_s": 5.0, "types": None, "gpus": 0, "memory_bytes": 0,
                            "labels": [], "limits": {}, "recovery_s": 60.0}  # fmt: skip
    args.update(overrides)
    return q.claim_job(conn, **args)


def test_insert_is_idempotent_by_key(store: Store) -> None:
    with store.transaction() as conn:
        first, inserted = q.insert_job(conn, _row(idempotency_key="k"))
        again, inserted_again = q.insert_job(conn, _row(idempotency_key="k", priority=5))
        other = _id(conn, _row())
    assert (inserted, inserted_again, again["id"], again["priority"]) == (True, False, first["id"], 0)
    assert other != first["id"]
    with store.read() as conn:
        found = q.job_by_idempotency_key(conn, "k")
        assert found is not None and found["priority"] == 0
        assert q.job_by_idempotency_key(conn, "nope") is None


def test_claim_grants_a_lease_capped_by_timeout_and_bumps_the_token(store: Store) -> None:
    with store.transaction() as conn:
        short = _id(conn, _row(timeout_s=2.0))
        row = _claim(conn)
    assert row["id"] == short and row["status"] == "running" and row["lease_token"] == 1 and row["attempts"] == 1
    assert row["lease_expires_at"] == 12.0 and row["claimed_at"] == 10.0 and row["lease_node"] == "n"


def test_claim_filters(store: Store) -> None:
    with store.transaction() as conn:
        later = _id(conn, _row(run_after=11.0))
        labelled = _id(conn, _row(need_labels=["x", "y"]))
        waiting = _id(conn, _row(waiting_on=1), depends_on=[labelled])
        assert _claim(conn, labels=["x"]) is None
        assert _claim(conn, labels=["x", "y", "z"])["id"] == labelled
        assert _claim(conn, now=11.0)["id"] == later
        assert _claim(conn, now=99.0) is None
        assert q.mark_dependents(conn, [labelled, 999]) == {labelled: "running"}
        assert q.dependencies_of(conn, waiting) == [labelled]
        assert q.release_dependents(conn, labelled) == 1
        assert _claim(conn, types=["selfplay", "train"])["id"] == waiting


def test_stale_tokens_change_nothing(store: Store) -> None:
    with store.transaction() as conn:
        job_id = _id(conn, _row())
        lease = _claim(conn)
        assert q.extend_lease(conn, job_id, lease["lease_token"] + 1, now=11.0, lease_s=5.0) is None
        assert q.extend_lease(conn, job_id, lease["lease_token"], now=11.0, lease_s=5.0) == 16.0
        assert q.finish_job(conn, job_id, 99, status="completed", now=12.0) is None
        assert q.requeue_job(conn, job_id, 99, now=12.0, run_after=13.0, error="x") is None
        assert [r["id"] for r in q.expired_jobs(conn, now=16.5, limit=10)] == [job_id]
        assert [r["id"] for r in q.node_jobs(conn, "n")] == [job_id]
        requeued = q.requeue_job(conn, job_id, lease["lease_token"], now=17.0, run_after=18.0, error="x")
        assert requeued is not None and requeued["status"] == "queued" and requeued["error"] == "x"
        assert q.expired_jobs(conn, now=99.0, limit=10) == []


def test_finish_records_the_result_once_and_decodes_json(store: Store) -> None:
    with store.transaction() as conn:
        job_id = _id(conn, _row(payload={"n": [1, 2]}, need_labels=["gpu"]))
        lease = _claim(conn, labels=["gpu"])
        result = {"games": 3, "path": "a/b", "nested": [1.5, None]}
        done = q.finish_job(conn, job_id, lease["lease_token"], status="completed", now=12.0, result=result)
        assert done is not None and done["status"] == "completed" and done["finished_at"] == 12.0
        assert (done["result"], done["payload"], done["need_labels"]) == (result, {"n": [1, 2]}, ["gpu"])
        assert q.finish_job(conn, job_id, lease["lease_token"], status="completed", now=13.0, result={}) is None
    with store.read() as conn:
        stored = q.get_job(conn, job_id)
    assert stored is not None and stored["result"] == result and stored["lease_expires_at"] is None


def test_counts_lists_and_bounded_depth(store: Store) -> None:
    with store.transaction() as conn:
        for _ in range(5):
            q.insert_job(conn, _row())
        q.insert_job(conn, _row(type="train", status="dead"))
    with store.read() as conn:
        assert q.queued_depth(conn, "selfplay", at_most=3) == 3
        assert q.queued_depth(conn, "selfplay", at_most=100) == 5
        assert q.job_counts(conn) == [("selfplay", "queued", 5), ("train", "dead", 1)]
        assert len(q.list_jobs(conn, statuses=["dead"])) == 1
        assert len(q.list_jobs(conn, job_type="selfplay", config_key="c", limit=2)) == 2


def test_backpressure_row(store: Store) -> None:
    with store.transaction() as conn:
        assert q.get_backpressure(conn, "selfplay") is None
        assert q.lock_backpressure(conn, "selfplay", initial="NONE", now=1.0) == "NONE"
        q.set_backpressure(conn, "selfplay", level="SOFT", depth=7, now=2.0)
        assert q.lock_backpressure(conn, "selfplay", initial="NONE", now=3.0) == "SOFT"
    with store.read() as conn:
        assert q.get_backpressure(conn, "selfplay") == "SOFT"
