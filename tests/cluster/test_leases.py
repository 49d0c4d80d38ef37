"""Leader and role leases: monotonic fencing tokens, the guard, expiry, events."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from tests.helpers import FakeClock
from zeroloop.app import App
from zeroloop.cluster.leases import LEADER, LeaderElector, LeaseManager, LeaseState, guard
from zeroloop.daemons.daemon import Leadership
from zeroloop.errors import LeaseError
from zeroloop.events.bus import EventBus
from zeroloop.store.database import Store
from zeroloop.store.schema import events


def _managers(app: App, clock: FakeClock) -> tuple[LeaseManager, LeaseManager]:
    a = LeaseManager(app.store, app.bus, holder="a", ttl_s=10, clock=clock)
    b = LeaseManager(app.store, app.bus, holder="b", ttl_s=10, clock=clock)
    return a, b


def test_tokens_increase_and_are_never_reused(app: App) -> None:
    clock = FakeClock()
    a, b = _managers(app, clock)
    seen = []
    first = a.acquire(LEADER)
    assert first == 1
    assert b.acquire(LEADER) is None  # held by a
    assert a.acquire(LEADER) == first  # renewal keeps the token
    seen.append(first)
    assert a.release(LEADER, first)
    seen.append(b.acquire(LEADER))  # after release
    clock.advance(11)
    seen.append(a.acquire(LEADER))  # after expiry
    assert a.release(LEADER, seen[-1])
    seen.append(a.acquire(LEADER))  # the same holder again, after its own release
    assert seen == [1, 2, 3, 4]
    assert b.acquire("promotion") == 1  # role leases count on their own


def test_guard_refuses_a_stale_or_expired_token(app: App) -> None:
    clock = FakeClock()
    a, b = _managers(app, clock)
    token = a.acquire(LEADER)
    assert token is not None
    with app.store.transaction() as conn:
        a.guard(conn, LEADER, token)  # current: accepted
    clock.advance(11)
    with pytest.raises(LeaseError, match="stale"), app.store.transaction() as conn:
        a.guard(conn, LEADER, token)  # expired, even though nobody took over
    newer = b.acquire(LEADER)
    assert newer == token + 1
    with pytest.raises(LeaseError, match=f"token {token} is stale"), app.store.transaction() as conn:
        guard(conn, LEADER, token, clock=clock)
    assert not a.renew(LEADER, token)


def test_a_refused_write_rolls_back_with_its_transaction(app: App) -> None:
    clock = FakeClock()
    a, b = _managers(app, clock)
    token = a.acquire(LEADER)
    clock.advance(11)
    b.acquire(LEADER)
    assert token is not None
    with pytest.raises(LeaseError), app.store.transaction() as conn:
        app.bus.publish("NODE_LOST", {"node": "x", "silent_s": 1.0})
        a.guard(conn, LEADER, token)
    with app.store.read() as conn:
        assert conn.execute(sa.select(events.c.id).where(events.c.type == "NODE_LOST")).first() is None


def test_election_events_and_state(app: App) -> None:
    clock = FakeClock()
    a, b = _managers(app, clock)
    leadership = Leadership()
    elector = LeaderElector(a, leadership)
    assert elector.tick()
    assert leadership.token == 1
    lease = a.get(LEADER)
    assert lease is not None
    assert (lease.holder, lease.state) == ("a", LeaseState.HELD)
    clock.advance(11)
    assert b.acquire(LEADER) == 2
    assert not elector.tick()
    assert leadership.token is None
    with app.store.read() as conn:
        rows = conn.execute(sa.select(events.c.type, events.c.payload).order_by(events.c.id)).all()
    assert [(r.type, r.payload["node"], r.payload["token"]) for r in rows] == [
        ("LEADER_ELECTED", "a", 1),
        ("LEADER_LOST", "a", 1),
        ("LEADER_ELECTED", "b", 2),
    ]


def test_a_long_wait_for_the_lease_row_never_writes_a_lease_that_has_already_run_out(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each wait for the row's lock takes `wait[0]` seconds (another transaction held the row): the
    # time must be read once the lock is held, or what is written was judged on a stale clock.
    from zeroloop.cluster import leases as module

    clock = FakeClock()
    a, _b = _managers(app, clock)  # 10 s leases
    wait = [12.0]
    for name in ("lock_lease", "try_lock_lease"):
        if hasattr(module.queries, name):
            real = getattr(module.queries, name)

            def slow(conn: object, role: str, *, _real: object = real) -> object:
                clock.advance(wait[0])
                return _real(conn, role)  # type: ignore[operator]

            monkeypatch.setattr(module.queries, name, slow)
    token = a.acquire(LEADER)
    assert token is not None
    lease = a.get(LEADER)
    assert lease is not None and lease.state is LeaseState.HELD and lease.expires_at == clock.now + 10
    wait[0] = 4.0
    assert a.renew(LEADER, token)  # measured from when it got the lock
    assert a.get(LEADER).expires_at == clock.now + 10  # type: ignore[union-attr]
    with app.store.transaction() as conn:
        a.guard(conn, LEADER, token)
    wait[0] = 12.0  # longer than the lease: by the time the row is ours, the lease has run out
    assert not a.renew(LEADER, token)
    with pytest.raises(LeaseError, match="stale"), app.store.transaction() as conn:
        a.guard(conn, LEADER, token)


def test_a_leader_whose_renewal_meets_its_own_fenced_write_keeps_leading(pg_store: Store) -> None:
    # Every leader-only write locks the lease row (the guard) for its whole transaction; the
    # leader's renewal, on another connection meanwhile, must wait for it, not give the lease up.
    import threading

    bus = EventBus(pg_store, node="a", source="test")
    leases = LeaseManager(pg_store, bus, holder="a", ttl_s=30)
    token = leases.acquire(LEADER)
    assert token is not None
    guarding, release = threading.Event(), threading.Event()

    def write() -> None:
        with pg_store.transaction() as conn:
            leases.guard(conn, LEADER, token)
            guarding.set()
            release.wait(timeout=30)

    writer = threading.Thread(target=write)
    writer.start()
    assert guarding.wait(timeout=30)
    renewed: list[int | None] = []
    renewal = threading.Thread(target=lambda: renewed.append(leases.acquire(LEADER)))
    renewal.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not _waits_for_a_lock(pg_store):
        time.sleep(0.05)  # until the renewal is seen waiting on the row (bounded)
    release.set()
    writer.join(timeout=30)
    renewal.join(timeout=30)
    assert renewed == [token]


def _waits_for_a_lock(store: Store) -> bool:
    with store.read() as conn:
        waiting = conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"))
        return bool(waiting.scalar_one())
