"""The store itself: URL validation, reachability, transactions on both backends."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from zeroloop.config import StoreSettings
from zeroloop.errors import DataDirError, StoreUnavailable, StoreURLError
from zeroloop.store.database import Store, ensure_writable_dir, parse_store_url
from zeroloop.store.schema import leases


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u@h/db", "unsupported scheme 'mysql'"),
        ("not a url", "malformed store URL"),
        ("sqlite://", "names no file"),
        ("sqlite:///:memory:", "names no file"),
        ("postgresql://u:pw@h", "names no database"),
    ],
)
def test_bad_urls_are_refused_with_the_reason(url: str, message: str) -> None:
    with pytest.raises(StoreURLError, match=message) as raised:
        parse_store_url(url)
    assert "pw" not in str(raised.value)


def test_malformed_url_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(StoreURLError):
        Store(f"sqlite+nope:///{tmp_path}/a/b.db?x")
    with pytest.raises(StoreURLError):
        Store("ftp://example/x")
    assert list(tmp_path.iterdir()) == []


def test_unreachable_postgres_is_one_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = Store(f"postgresql://zeroloop:secret@127.0.0.1:{port}/zeroloop")
    with pytest.raises(StoreUnavailable) as raised:
        store.ping()
    assert "cannot reach the store" in str(raised.value)
    assert "secret" not in str(raised.value)
    store.close()


def _lease_row(name: str) -> dict[str, object]:
    return {"name": name, "holder": "n1", "token": 1, "expires_at": 1.0, "acquired_at": 0.0}


def test_nested_transaction_joins_and_rolls_back_together(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction() as outer:
        outer.execute(sa.insert(leases).values(**_lease_row("a")))
        with store.transaction() as inner:
            assert inner is outer
            inner.execute(sa.insert(leases).values(**_lease_row("b")))
        raise RuntimeError("roll back both")
    with store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(leases)).scalar_one() == 0
    assert not store.in_transaction


def test_committed_transaction_is_visible_to_another_connection(store: Store) -> None:
    with store.transaction() as conn:
        conn.execute(sa.insert(leases).values(**_lease_row("a")))
    with Store(store.url.render_as_string(hide_password=False)) as other, other.read() as conn:
        assert conn.execute(sa.select(leases.c.name)).scalars().all() == ["a"]


def test_concurrent_writers_queue_instead_of_failing(store: Store) -> None:
    # Read-then-write in each transaction: with deferred BEGIN this deadlocks or raises
    # "database is locked" on SQLite; BEGIN IMMEDIATE makes the writers queue.
    with store.transaction() as conn:
        conn.execute(sa.insert(leases).values(**_lease_row("counter")))
    errors: list[BaseException] = []

    def bump() -> None:
        try:
            for _ in range(50):
                with store.transaction() as conn:
                    token = conn.execute(sa.select(leases.c.token).where(leases.c.name == "counter").with_for_update())
                    value = token.scalar_one()
                    conn.execute(sa.update(leases).where(leases.c.name == "counter").values(token=value + 1))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    with store.read() as conn:
        assert conn.execute(sa.select(leases.c.token).where(leases.c.name == "counter")).scalar_one() == 201


def _backend_pid(store: Store) -> int:
    with store.transaction() as conn:
        return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


def _terminate(store: Store, pid: int) -> None:
    with Store(store.url.render_as_string(hide_password=False)) as other, other.transaction() as conn:
        assert conn.exec_driver_sql(f"SELECT pg_terminate_backend({pid})").scalar_one()


def test_a_pooled_postgres_connection_cut_while_idle_is_replaced_unseen(pg_store: Store) -> None:
    url = pg_store.url.render_as_string(hide_password=False)
    with Store(url, StoreSettings(url=url, pool_size=1, ping_after_idle_s=0.0)) as store:
        first = _backend_pid(store)
        _terminate(store, first)
        assert _backend_pid(store) != first  # pinged at checkout, found dead, replaced


def test_a_postgres_connection_cut_in_constant_use_fails_one_transaction_then_reconnects(pg_store: Store) -> None:
    url = pg_store.url.render_as_string(hide_password=False)
    with Store(url, StoreSettings(url=url, pool_size=1, ping_after_idle_s=3600.0)) as store:
        first = _backend_pid(store)
        _terminate(store, first)
        with pytest.raises(StoreUnavailable, match="cannot reach the store"):
            _backend_pid(store)
        assert _backend_pid(store) != first


def test_processes_starting_together_do_not_trip_over_each_others_write_probe(tmp_path: Path) -> None:
    errors: list[Exception] = []

    def open_many() -> None:
        for _ in range(300):
            try:
                ensure_writable_dir(tmp_path / "data", "data directory")
            except DataDirError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=open_many) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [] and list((tmp_path / "data").iterdir()) == []


def test_a_session_paused_inside_a_transaction_loses_its_locks_to_the_next_writer(pg_store: Store) -> None:
    # A holder that stops mid-transaction (SIGSTOP, a frozen VM) is ended by PostgreSQL after
    # store.idle_in_transaction_timeout_s, so a writer waiting for its row lock gets it.
    url = pg_store.url.render_as_string(hide_password=False)
    settings = StoreSettings(url=url, idle_in_transaction_timeout_s=1.0)
    with Store(url, settings) as paused, Store(url, settings) as writer:
        with writer.transaction() as conn:
            conn.execute(sa.insert(leases).values(name="held", holder=None, token=0, expires_at=0.0, acquired_at=0.0))
        stuck = paused.engine.connect()
        try:
            stuck.execute(sa.select(leases).where(leases.c.name == "held").with_for_update())  # and never commits
            with writer.transaction() as conn:
                conn.exec_driver_sql("SET LOCAL lock_timeout = '20s'")  # without the guard: a LockNotAvailable
                conn.execute(sa.update(leases).where(leases.c.name == "held").values(token=1))
            with pytest.raises(sa.exc.DBAPIError, match="idle-in-transaction timeout"):  # the paused session ended
                stuck.execute(sa.select(leases.c.token))
        finally:
            stuck.invalidate()
            stuck.close()
