"""Contract tests of the event-bus store operations (log reads, consumers, dead letters, metrics) on both backends."""

from __future__ import annotations

from typing import Any

from zeroloop.store.database import Store
from zeroloop.store.queries import consumers, dead_letters
from zeroloop.store.queries import events as log


def _row(event_type: str = "NODE_LOST", config_key: str | None = None, created_at: float = 1.0) -> dict[str, Any]:
    return {
        "type": event_type,
        "payload": {"n": 1},
        "source": "s",
        "node": "n",
        "created_at": created_at,
        "config_key": config_key,
    }


def test_read_after_filters_orders_and_limits(store: Store) -> None:
    with store.transaction() as conn:
        ids = [id_ for id_, _ in log.insert_events(conn, [_row(), _row("JOB_QUEUED", "k"), _row(), _row("JOB_QUEUED")])]
    with store.read() as conn:
        limit_horizon = log.horizon(conn)
        assert (limit_horizon is None) == (store.backend == "sqlite")
        everything = log.read_after(conn, (0, 0), limit_horizon=limit_horizon)
        assert [row["id"] for row in everything] == ids
        first = everything[0]
        position = (int(first["txid"] or 0), int(first["id"]))
        assert [r["id"] for r in log.read_after(conn, position, limit_horizon=limit_horizon, limit=2)] == ids[1:3]
        assert [r["id"] for r in log.read_after(conn, (0, 0), limit_horizon=limit_horizon, types=["JOB_QUEUED"])] == [
            ids[1],
            ids[3],
        ]
        assert [r["id"] for r in log.read_after(conn, (0, 0), limit_horizon=limit_horizon, config_keys=["k"])] == [
            ids[1]
        ]
        high = log.high_water(conn, limit_horizon=limit_horizon)
        assert high[1] == ids[-1]
        marked_horizon, marked_high, newest = log.marks(conn)
        assert (marked_high, newest) == (high, high)
        assert (marked_horizon is None) == (store.backend == "sqlite")
        assert log.read_after(conn, high, limit_horizon=limit_horizon) == []
        assert log.count_after(conn, position, types=["NODE_LOST"]) == 1
        assert log.count_by_type(conn) == {"NODE_LOST": 2, "JOB_QUEUED": 2}
        assert log.position_before(conn, ids[2])[1] == ids[2] - 1
        assert [r["id"] for r in log.read_after(conn, log.position_before(conn, ids[2]), limit_horizon=None)] == ids[2:]
        assert [r["id"] for r in log.latest(conn, limit=2)] == ids[2:]
        event = log.get_event(conn, ids[0])
        assert event is not None and event["payload"] == {"n": 1}


def test_empty_log(store: Store) -> None:
    with store.read() as conn:
        assert log.high_water(conn, limit_horizon=log.horizon(conn)) == (0, 0)
        assert log.read_after(conn, (0, 0), limit_horizon=log.horizon(conn)) == []
    with store.transaction() as conn:
        assert log.prune(conn, older_than=1e12, keep_count=0, processed_up_to=None, keep_ids=[]) == 0


def test_prune_respects_every_bound(store: Store) -> None:
    with store.transaction() as conn:
        ids = [log.insert_event(conn, _row(created_at=float(i)))[0] for i in range(6)]
    with store.read() as conn:
        rows = log.read_after(conn, (0, 0), limit_horizon=None)
    positions = [(int(r["txid"] or 0), int(r["id"])) for r in rows]
    with store.transaction() as conn:
        # old enough: ids 0..3; processed only up to ids[2]; ids[1] kept for a dead letter
        deleted = log.prune(conn, older_than=4.0, keep_count=100, processed_up_to=positions[2], keep_ids=[ids[1]])
    assert deleted == 2
    with store.transaction() as conn:
        deleted = log.prune(conn, older_than=0.0, keep_count=0, processed_up_to=None, keep_ids=[])
        remaining = [r["id"] for r in log.read_after(conn, (0, 0), limit_horizon=None)]
    assert remaining == [ids[-1]]  # the newest is always kept
    assert deleted == 3


def test_consumer_cursor_is_created_once_moves_forward_and_resets(store: Store) -> None:
    with store.transaction() as conn:
        assert consumers.ensure_consumer(
            conn, "c", types=["B", "A"], config_keys=None, node="n", start=(0, 5), now=1.0
        ) == (0, 5)
        assert consumers.ensure_consumer(
            conn, "c", types=["A"], config_keys=["k"], node="n", start=(0, 9), now=2.0
        ) == (
            0,
            5,
        )
        consumers.advance_cursor(conn, "c", (0, 7), now=3.0)
        consumers.advance_cursor(conn, "c", (0, 6), now=4.0)  # never backwards
        assert consumers.get_cursor(conn, "c") == (0, 7)
        assert consumers.reset_cursor(conn, "c", (0, 2), now=5.0)
        assert not consumers.reset_cursor(conn, "missing", (0, 2), now=5.0)
        consumers.ensure_consumer(conn, "d", types=[], config_keys=None, node="n", start=(0, 1), now=1.0)
        assert consumers.slowest_cursor(conn) == (0, 1)
        [first, _] = consumers.list_consumers(conn)
        assert (first["types"], first["config_keys"]) == (["A"], ["k"])
        assert consumers.delete_consumer(conn, "d")
        assert consumers.get_cursor(conn, "d") is None
        consumers.bump_metrics(conn, "c", {("A", "delivered"): 2, ("A", "failed"): 1})
        consumers.bump_metrics(conn, "c", {("A", "delivered"): 1, ("B", "dead"): 1})
        metrics = {(r["event_type"], r["consumer"]): r for r in consumers.read_metrics(conn)}
    assert (metrics["A", "c"]["delivered"], metrics["A", "c"]["failed"], metrics["B", "c"]["dead"]) == (3, 1, 1)


def test_dead_letter_operations(store: Store) -> None:
    with store.transaction() as conn:
        letter = dead_letters.insert_dead_letter(
            conn,
            event_id=7,
            consumer="c",
            status="pending",
            attempts=3,
            error="E",
            traceback="T",
            now=1.0,
            next_retry_at=5.0,
        )
        assert dead_letters.due_dead_letters(conn, consumers=["c"], status="pending", now=4.0, limit=10) == []
        assert [
            r["id"] for r in dead_letters.due_dead_letters(conn, consumers=["c"], status="pending", now=5.0, limit=10)
        ] == [letter]
        assert not dead_letters.update_dead_letter(
            conn, letter, expect_status="parked", status="dropped", now=2, next_retry_at=None
        )
        assert dead_letters.update_dead_letter(
            conn, letter, expect_status="pending", status="parked", now=2, next_retry_at=None, attempts=4, error="E2"
        )
        row = dead_letters.get_dead_letter(conn, letter)
        assert row is not None and (row["status"], row["attempts"], row["error"]) == ("parked", 4, "E2")
        assert dead_letters.pending_event_ids(conn, statuses=["pending", "parked"]) == [7]
        assert dead_letters.count_by_status(conn) == {"parked": 1}
        assert [r["id"] for r in dead_letters.list_dead_letters(conn, statuses=["parked"], consumer="c")] == [letter]
