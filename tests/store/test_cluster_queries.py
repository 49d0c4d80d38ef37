"""Contract tests of the node, lease, daemon and breaker operations on both backends."""

from __future__ import annotations

from zeroloop.store.database import Store
from zeroloop.store.queries import breakers, daemons, leases, nodes


def _node(node_id: str, heartbeat_at: float) -> dict[str, object]:
    return {
        "id": node_id,
        "host": "h",
        "provider": "local",
        "labels": [],
        "cpu_count": 1,
        "memory_bytes": 1,
        "disk_bytes": 1,
        "gpus": [],
        "cost_per_hour": None,
        "status": "active",
        "utilisation": {},
        "registered_at": 0.0,
        "heartbeat_at": heartbeat_at,
        "idle_since": None,
        "status_changed_at": 0.0,
    }


def test_nodes_upsert_heartbeat_status_and_silence(store: Store) -> None:
    with store.transaction() as conn:
        nodes.upsert_node(conn, _node("a", 10.0))
        nodes.upsert_node(conn, _node("b", 10.0))
        nodes.upsert_node(conn, _node("a", 10.0))  # re-registration replaces
        assert nodes.record_heartbeat(conn, "b", {"cpu_pct": 1.0}, 50.0) == "active"
        assert nodes.record_heartbeat(conn, "ghost", {}, 50.0) is None
        assert [row["id"] for row in nodes.silent_nodes(conn, 20.0, ("active",))] == ["a"]
        assert nodes.set_node_status(conn, "a", "lost", 60.0, expected="active")
        assert not nodes.set_node_status(conn, "a", "lost", 61.0, expected="active")  # lost race
        nodes.set_idle_since(conn, "b", 55.0)
    with store.read() as conn:
        assert [(r["id"], r["status"]) for r in nodes.list_nodes(conn)] == [("a", "lost"), ("b", "active")]
        b = nodes.get_node(conn, "b")
        assert b is not None
        assert (b["idle_since"], b["utilisation"]) == (55.0, {"cpu_pct": 1.0})


def test_lease_rows_lock_extend_and_free_keeping_the_token(store: Store) -> None:
    with store.transaction() as conn:
        row = leases.lock_lease(conn, "leader")
        assert (row["holder"], row["token"]) == (None, 0)
        leases.write_lease(conn, "leader", holder="a", token=1, expires_at=20.0, acquired_at=10.0)
        assert leases.extend_lease(conn, "leader", "a", 1, now=15.0, expires_at=25.0)
        assert not leases.extend_lease(conn, "leader", "a", 1, now=30.0, expires_at=40.0)  # expired
        assert not leases.extend_lease(conn, "leader", "b", 1, now=15.0, expires_at=40.0)  # not the holder
        assert leases.free_lease(conn, "leader", "a", 1, now=5.0)
    with store.read() as conn:
        freed = leases.get_lease(conn, "leader")
        assert freed is not None
        assert (freed["holder"], freed["token"]) == (None, 1)
        assert [r["name"] for r in leases.list_leases(conn)] == ["leader"]
        assert leases.get_lease(conn, "other") is None


def test_daemon_and_breaker_rows_upsert(store: Store) -> None:
    row = {
        "node": "n",
        "name": "d",
        "state": "running",
        "restarts": 0,
        "last_error": None,
        "health": {},
        "started_at": 1.0,
        "updated_at": 1.0,
    }
    breaker = {"key": "node:n", "state": "open", "failures": 3, "successes": 0, "opened_at": 5.0, "updated_at": 5.0}
    with store.transaction() as conn:
        daemons.upsert_daemon(conn, row)
        daemons.upsert_daemon(conn, {**row, "state": "failed", "restarts": 5})
        breakers.upsert_breaker(conn, breaker)
        breakers.upsert_breaker(conn, {**breaker, "state": "half_open"})
    with store.read() as conn:
        assert [(r["state"], r["restarts"]) for r in daemons.list_daemons(conn, "n")] == [("failed", 5)]
        assert daemons.list_daemons(conn, "other") == []
        assert [r["state"] for r in breakers.list_breakers(conn, ("half_open",))] == ["half_open"]
        found = breakers.get_breaker(conn, "node:n", lock=True)
        assert found is not None
        assert found["failures"] == 3
        assert breakers.get_breaker(conn, "node:x") is None
