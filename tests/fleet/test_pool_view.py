"""A scaling decision reads a pool's current nodes, not its whole history, and decides the same."""

from __future__ import annotations

from typing import Any

from zeroloop.store.database import Store
from zeroloop.store.queries import nodes as queries


def _node(node_id: str, status: str, launched_at: float | None, pool: str = "p") -> dict[str, Any]:
    return {
        "id": node_id,
        "host": "h",
        "provider": "memory",
        "labels": [],
        "cpu_count": 1,
        "memory_bytes": 1,
        "disk_bytes": 1,
        "gpus": [],
        "status": status,
        "utilisation": {},
        "registered_at": 0.0,
        "heartbeat_at": 0.0,
        "status_changed_at": launched_at or 0.0,
        "pool": pool,
        "launched_at": launched_at,
    }


def test_a_pool_view_reads_the_current_nodes_and_the_newest_terminated_one(store: Store) -> None:
    history = [_node(f"old-{i:03d}", "terminated", float(i)) for i in range(200)]
    history += [
        _node("hand-started", "terminated", None),
        _node("newest-gone", "terminated", 500.0),
        _node("failed-1", "failed", 600.0),
        _node("failed-2", "failed", 700.0),
        _node("running", "active", 300.0),
        _node("other-pool", "active", 800.0, pool="q"),
    ]
    with store.transaction() as conn:
        for row in history:
            queries.insert_node(conn, row)
    with store.read() as conn:
        current = queries.pool_nodes_current(conn, "p")
        everything = queries.pool_nodes(conn, "p")
    assert [row["id"] for row in current] == ["failed-1", "failed-2", "newest-gone", "running"]
    assert len(everything) == 205

    def decided_by(rows: list[dict[str, Any]]) -> tuple[Any, ...]:
        """What the autoscaler's pool view takes from the rows: counts, the failure run, the last launch."""
        newest_first = sorted(rows, key=lambda r: r["launched_at"] or 0.0, reverse=True)
        run = next(i for i, row in enumerate(newest_first) if row["status"] != "failed")
        statuses = sorted(row["status"] for row in rows if row["status"] != "terminated")
        return statuses, run, max(row["launched_at"] for row in rows if row["launched_at"] is not None)

    assert decided_by(current) == decided_by(everything) == (["active", "failed", "failed"], 2, 700.0)
