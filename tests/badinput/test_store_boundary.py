"""The store's boundary: no driver exception escapes, and a mistyped SQLite path starts no new store."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.helpers import make_app
from zeroloop.app import App
from zeroloop.config import Settings, StoreSettings
from zeroloop.errors import StoreCorrupt, StoreError, StoreFull, StoreUnavailable
from zeroloop.store import migrate
from zeroloop.store.database import Store
from zeroloop.store.schema import jobs


def test_a_sqlite_url_in_a_missing_directory_is_refused_and_creates_nothing(tmp_path: Path) -> None:
    target = tmp_path / "typo" / "zeroloop.db"
    settings = Settings(data_dir=tmp_path / "data", store=StoreSettings(url=f"sqlite:///{target}"))
    with pytest.raises(StoreUnavailable, match=r"directory .*typo of the store .* does not exist"):
        App(settings)
    assert not target.parent.exists()


def test_the_embedded_default_store_creates_its_data_directory(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "fresh" / "data")
    with App(settings) as app:
        app.store.ping()
    assert (tmp_path / "fresh" / "data" / "zeroloop.db").is_file()


@pytest.mark.parametrize("damage", ["random", "truncated"])
def test_a_damaged_store_file_is_one_clear_error(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "store.db"
    if damage == "random":
        path.write_bytes(bytes(range(256)) * 64)
    else:
        with Store(f"sqlite:///{path}") as store:
            migrate.upgrade(store)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
        for extra in ("-wal", "-shm"):
            Path(f"{path}{extra}").unlink(missing_ok=True)
    with (
        pytest.raises(StoreCorrupt, match="damaged or is not a zeroloop store") as raised,
        make_app(f"sqlite:///{path}", tmp_path) as app,
    ):
        app.queue.enqueue("selfplay", "c")
    assert isinstance(raised.value.__cause__, sa.exc.DBAPIError | sqlite3.Error)


def test_an_unresolvable_postgresql_host_is_store_unavailable(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    url = "postgresql://zl:secret@no-such-host.invalid:5432/zl"
    with (
        pytest.raises(StoreUnavailable, match=r"cannot reach the store at postgresql://zl:\*\*\*@") as raised,
        Store(url, StoreSettings(connect_timeout_s=1)) as store,
    ):
        store.ping()
    assert "secret" not in str(raised.value) and raised.value.__cause__ is not None


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("database or disk is full", StoreFull),
        ("database is locked", StoreUnavailable),
        ("file is not a database", StoreCorrupt),
        ("attempt to write a readonly database", StoreUnavailable),
        ("no such table: jobs", StoreError),
    ],
)
def test_driver_errors_become_store_errors(tmp_path: Path, message: str, expected: type[StoreError]) -> None:
    with (
        Store(f"sqlite:///{tmp_path / 'store.db'}") as store,
        pytest.raises(expected) as raised,
        store.transaction(),
    ):
        raise sqlite3.OperationalError(message)
    assert type(raised.value.__cause__) is sqlite3.OperationalError


def test_a_refused_statement_is_a_store_error_with_its_cause(store: Store) -> None:
    with pytest.raises(StoreError, match="refused the operation") as raised, store.transaction() as conn:
        conn.execute(sa.insert(jobs).values(id=1))  # NOT NULL columns missing
    assert raised.value.__cause__ is not None


def test_a_number_beyond_64_bits_is_a_store_error(app: App) -> None:
    with pytest.raises(StoreError):
        app.queue.get(2**70)


def test_a_store_that_vanishes_under_the_app_is_one_clear_error(tmp_path: Path) -> None:
    directory = tmp_path / "vanishing"
    directory.mkdir()
    url = f"sqlite:///{directory / 'store.db'}"
    with Store(url) as store:
        migrate.upgrade(store)
    with make_app(url, tmp_path) as app:
        app.store.close()
        shutil.rmtree(directory)
        with pytest.raises(StoreError):
            app.queue.enqueue("selfplay", "c")
