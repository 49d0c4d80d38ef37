"""The store: one SQLAlchemy engine over SQLite or PostgreSQL, and its transactions.

The backend is chosen by URL: `sqlite:///path` (WAL mode, every write transaction
`BEGIN IMMEDIATE` so concurrent writers queue on the busy timeout instead of failing
with lock errors on upgrade) or `postgresql://...` (psycopg 3). Transactions are
re-entrant per thread: `transaction()` opened inside another joins it, so a state
change and the event it publishes commit together or not at all.
"""

from __future__ import annotations

import contextvars
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, DisconnectionError, OperationalError

from zeroloop.config import StoreSettings, redact
from zeroloop.errors import DataDirError, StoreUnavailable, StoreURLError
from zeroloop.store.turns import WriterTurns

Backend = Literal["sqlite", "postgresql"]

_READ_ONLY = "zeroloop_read_only"
_ACCEPTED_DRIVERS = {"sqlite", "sqlite+pysqlite", "postgresql", "postgres", "postgresql+psycopg"}


def parse_store_url(url: str) -> tuple[Backend, URL]:
    """Validate a store URL and return its backend and the SQLAlchemy URL to use."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreURLError(
            f"malformed store URL {redact(url)!r}: expected sqlite:///path/to/file.db or "
            "postgresql://user:password@host:port/database"
        ) from None
    scheme = parsed.drivername.split("+", 1)[0]
    if parsed.drivername not in _ACCEPTED_DRIVERS:
        raise StoreURLError(
            f"store URL {redact(url)!r} has unsupported scheme {parsed.drivername!r}: use sqlite:///path or "
            "postgresql://..."
        )
    if scheme in ("postgresql", "postgres"):
        if not parsed.database:
            raise StoreURLError(f"store URL {redact(url)!r} names no database: add /<database> after the host")
        return "postgresql", parsed.set(drivername="postgresql+psycopg")
    if not parsed.database or parsed.database == ":memory:":
        raise StoreURLError(
            f"store URL {redact(url)!r} names no file: zeroloop needs a file shared by its processes, "
            "e.g. sqlite:///var/lib/zeroloop/zeroloop.db"
        )
    return "sqlite", parsed.set(drivername="sqlite+pysqlite")


def sqlite_path(url: URL) -> Path:
    """The database file a SQLite URL names, made absolute."""
    assert url.database is not None
    return Path(url.database).expanduser().absolute()


def ensure_writable_dir(path: Path, what: str) -> None:
    """Create `path` if needed and prove it is writable; raise DataDirError otherwise."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDirError(
            f"cannot create the {what} {path}: {exc.strerror}; choose another with its setting"
        ) from None
    try:
        # A probe of its own: processes starting together must not unlink each other's.
        with tempfile.NamedTemporaryFile(dir=path, prefix=".zeroloop-write-probe-"):
            pass
    except OSError as exc:
        raise DataDirError(
            f"the {what} {path} is not writable ({exc.strerror}): fix its permissions or choose another"
        ) from None


class Store:
    """An open connection pool to the state store; the only channel between processes."""

    def __init__(self, url: str, settings: StoreSettings | None = None) -> None:
        settings = settings or StoreSettings()
        self.backend, self.url = parse_store_url(url)
        self.display_url = redact(url)
        self._current: contextvars.ContextVar[Connection | None] = contextvars.ContextVar(
            f"zeroloop_tx_{id(self)}", default=None
        )
        if self.backend == "sqlite":
            self.engine = self._sqlite_engine(settings)
            path = sqlite_path(self.url)
            self._turns = WriterTurns(path.with_name(path.name + ".write-turn"), settings.write_turn_max_s)
        else:
            self.engine = self._postgresql_engine(settings)
            self._turns = WriterTurns(None)

    def _sqlite_engine(self, settings: StoreSettings) -> Engine:
        path = sqlite_path(self.url)
        ensure_writable_dir(path.parent, "store directory")
        if path.exists() and not _writable(path):
            raise DataDirError(f"the store file {path} is read-only: fix its permissions or choose another")
        engine = sa.create_engine(self.url, connect_args={"timeout": settings.busy_timeout_s})

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
            # Take transaction control away from pysqlite so BEGIN IMMEDIATE is ours to emit.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(settings.busy_timeout_s * 1000)}")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            read_only = conn.get_execution_options().get(_READ_ONLY, False)
            driver: Any = conn.connection.dbapi_connection
            driver.execute("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine

    def _postgresql_engine(self, settings: StoreSettings) -> Engine:
        engine = sa.create_engine(
            self.url,
            pool_size=settings.pool_size,
            connect_args={"connect_timeout": max(1, round(settings.connect_timeout_s))},
        )

        # A pooled connection that sat idle may have been cut (server restart, failover,
        # a firewall's idle timeout): ping it before use and replace it if dead. One in
        # constant use is not pinged, which spares the hot path a round trip; a server
        # lost mid-use fails that one transaction, and the pool then reconnects.
        @sa.event.listens_for(engine, "checkin")
        def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
            record.info["idle_since"] = time.monotonic()

        @sa.event.listens_for(engine, "checkout")
        def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
            idle_since = record.info.get("idle_since")
            if idle_since is None or time.monotonic() - idle_since < settings.ping_after_idle_s:
                return
            try:
                engine.dialect.do_ping(dbapi_conn)
                dbapi_conn.rollback()  # the ping opened a transaction; start clean
            except Exception as exc:
                raise DisconnectionError(f"pooled connection is dead: {exc}") from exc

        return engine

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction, or the one already open in this context (joined, not nested).

        On SQLite it is taken in turn with the other writers (see `turns`), from BEGIN to COMMIT.
        """
        current = self._current.get()
        if current is not None:
            yield current
            return
        with self._errors(), self.engine.connect() as conn, self._turns.turn(), conn.begin():
            token = self._current.set(conn)
            try:
                yield conn
            finally:
                self._current.reset(token)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction (no write lock on SQLite), or the open one."""
        current = self._current.get()
        if current is not None:
            yield current
            return
        with self._errors(), self.engine.connect() as raw:
            conn = raw.execution_options(**{_READ_ONLY: True})
            with conn.begin():
                yield conn

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction of this store is open in the current context."""
        return self._current.get() is not None

    def ping(self) -> None:
        """Open a connection and run a trivial query; raise StoreUnavailable if that fails."""
        with self.read() as conn:
            conn.execute(sa.text("SELECT 1"))

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except OperationalError as exc:
            if _is_connect_error(exc):
                raise StoreUnavailable(f"cannot reach the store at {self.display_url}: {_first_line(exc)}") from exc
            raise
        except DBAPIError as exc:
            if "readonly database" in str(exc.orig):
                raise StoreUnavailable(f"the store at {self.display_url} is read-only: fix its permissions") from exc
            raise


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK)


def _is_connect_error(exc: OperationalError) -> bool:
    return bool(exc.connection_invalidated) or "connection" in str(exc.orig).lower() or "unable to open" in str(exc)


def _first_line(exc: DBAPIError) -> str:
    return str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
