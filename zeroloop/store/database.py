"""The store: one SQLAlchemy engine over SQLite or PostgreSQL, and its transactions.

The backend is chosen by URL: `sqlite:///path` (WAL mode, every write transaction
`BEGIN IMMEDIATE` so concurrent writers queue on the busy timeout instead of failing
with lock errors on upgrade) or `postgresql://...` (psycopg 3). Transactions are
re-entrant per thread: `transaction()` opened inside another joins it, so a state
change and the event it publishes commit together or not at all.

This is the store's boundary: no sqlite3, psycopg or SQLAlchemy exception leaves it.
Each becomes a `StoreError` (the driver's exception kept as `__cause__`): a store that
cannot be reached is `StoreUnavailable` (a full disk `StoreFull`), a damaged file is
`StoreCorrupt`, anything else the store refused is a plain `StoreError`.
"""

from __future__ import annotations

import contextvars
import errno
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, DisconnectionError

from zeroloop.config import Settings, StoreSettings, redact
from zeroloop.errors import DataDirError, StoreCorrupt, StoreError, StoreFull, StoreUnavailable, StoreURLError
from zeroloop.store.signal import APPENDED, EventSignal
from zeroloop.store.turns import WriterTurns


def _driver_errors() -> tuple[type[Exception], ...]:
    """The drivers' exception roots. psycopg is loaded by SQLAlchemy with a PostgreSQL engine, and only then."""
    psycopg = sys.modules.get("psycopg")
    return (sqlite3.Error,) if psycopg is None else (sqlite3.Error, psycopg.Error)


Backend = Literal["sqlite", "postgresql"]
_T = TypeVar("_T")

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

    def __init__(self, url: str, settings: StoreSettings | None = None, *, create_dir: bool = False) -> None:
        """Open the pool (lazily: the first transaction connects).

        A SQLite file's directory must exist unless `create_dir` (the embedded default in
        the data directory): a mistyped path must not start a new, empty store.
        """
        settings = settings or StoreSettings()
        self.backend, self.url = parse_store_url(url)
        self.display_url = redact(url)
        self._create_dir = create_dir
        self._current: contextvars.ContextVar[Connection | None] = contextvars.ContextVar(
            f"zeroloop_tx_{id(self)}", default=None
        )
        if self.backend == "sqlite":
            self.engine = self._sqlite_engine(settings)
            path = sqlite_path(self.url)
            self._turns = WriterTurns(path.with_name(path.name + ".write-turn"), settings.write_turn_max_s)
            self.event_signal: EventSignal | None = EventSignal(path.with_name(path.name + ".events"))
        else:
            self.engine = self._postgresql_engine(settings)
            self._turns = WriterTurns(None)
            self.event_signal = None  # PostgreSQL: NOTIFY in the appending transaction itself

    @classmethod
    def for_settings(cls, settings: Settings) -> Store:
        """The store the settings name; the embedded default's directory (the data directory) is created if needed."""
        return cls(settings.store_url, settings.store, create_dir=settings.store.url is None)

    def _sqlite_engine(self, settings: StoreSettings) -> Engine:
        path = sqlite_path(self.url)
        if path.is_dir():
            raise StoreURLError(f"store URL {self.display_url!r} names a directory: add a file name, e.g. /zeroloop.db")
        if not self._create_dir and not path.parent.is_dir():
            raise StoreUnavailable(
                f"the directory {path.parent} of the store {self.display_url} does not exist: create it or fix "
                "ZEROLOOP_STORE__URL (zeroloop creates only the data directory of its default store)"
            )
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
        # Locks die with a paused holder's session, not with the holder (which may never resume).
        idle_ms = round(settings.idle_in_transaction_timeout_s * 1000)
        engine = sa.create_engine(
            self.url,
            pool_size=settings.pool_size,
            connect_args={
                "connect_timeout": max(1, round(settings.connect_timeout_s)),
                "options": f"-c idle_in_transaction_session_timeout={idle_ms}",
            },
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

        On SQLite it is taken in turn with the other writers (see `turns`), from BEGIN to COMMIT,
        and a transaction that appended events rings the event signal once it has committed.
        """
        current = self._current.get()
        if current is not None:
            yield current
            return
        appended = False
        with self._errors(), ExitStack() as stack:
            conn = self._enter(stack, self.engine.connect())
            self._enter(stack, self._turns.turn())
            stack.enter_context(conn.begin())
            token = self._current.set(conn)
            try:
                yield conn
                appended = self.event_signal is not None and bool(conn.info.get(APPENDED))
            finally:
                # Only SQLite marks appends; an invalidated connection (a cut) is not touched, since
                # reading its info would try to reconnect and hide the error being raised.
                if self.event_signal is not None and not conn.invalidated:
                    conn.info.pop(APPENDED, None)
                self._current.reset(token)
        if appended and self.event_signal is not None:
            self.event_signal.ring()

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction (no write lock on SQLite), or the open one."""
        current = self._current.get()
        if current is not None:
            yield current
            return
        with self._errors(), ExitStack() as stack:
            raw = self._enter(stack, self.engine.connect())
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

    def _enter(self, stack: ExitStack, manager: AbstractContextManager[_T]) -> _T:
        """Enter a connection or a writer turn; an OS error doing so (a full disk, permissions) is StoreUnavailable."""
        try:
            return stack.enter_context(manager)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StoreFull(f"the store at {self.display_url} cannot write: {exc.strerror}; free space") from exc
            raise StoreUnavailable(f"cannot use the store at {self.display_url}: {exc.strerror or exc}") from exc

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except DBAPIError as exc:
            raise self._translate(exc.orig, invalidated=bool(exc.connection_invalidated)) from exc
        except _driver_errors() as exc:  # the hot path runs statements on the driver's own cursor
            raise self._translate(exc, invalidated=False) from exc
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"the store at {self.display_url} failed: {_first_line(exc)}") from exc
        except OverflowError as exc:  # sqlite3 raises it for an integer parameter beyond 64 bits
            raise StoreError(f"a number is too large for the store ({exc}): give one below 2**63") from exc

    def _translate(self, orig: BaseException | None, *, invalidated: bool) -> StoreError:
        """The StoreError that a driver exception means, in one line that says what to do."""
        detail = _first_line(orig)
        text = detail.lower()
        where = self.display_url
        if "disk is full" in text or "no space left" in text or "quota" in text:
            return StoreFull(f"the store at {where} cannot write, its disk is full ({detail}): free space and retry")
        if "readonly database" in text or "read-only" in text:
            return StoreUnavailable(f"the store at {where} is read-only: fix its permissions")
        if any(mark in text for mark in _CORRUPT):
            return StoreCorrupt(
                f"the store at {where} is damaged or is not a zeroloop store ({detail}): restore it from a backup "
                "or point ZEROLOOP_STORE__URL at another file"
            )
        if "no such table" in text or ("relation" in text and "does not exist" in text):
            return StoreError(f"the store at {where} has no zeroloop schema ({detail}): run `zeroloop db upgrade`")
        transient = isinstance(orig, sqlite3.OperationalError) and any(
            mark in text for mark in ("locked", "unable to open", "disk i/o error")
        )
        if invalidated or "connection" in text or "resolve host" in text or "server closed" in text:
            return StoreUnavailable(f"cannot reach the store at {where}: {detail}")
        if transient or _is_pg_operational(orig):
            # Deadlocks, serialization failures, cancelled statements, a busy SQLite file: worth retrying.
            return StoreUnavailable(f"the store at {where} could not complete the operation ({detail}): retry it")
        return StoreError(f"the store at {where} refused the operation: {detail}")


_CORRUPT = ("file is not a database", "malformed", "not a database", "database corrupt")


def _is_pg_operational(orig: BaseException | None) -> bool:
    # PostgreSQL's operational errors: a lost connection, a server shutting down, a deadlock,
    # a serialization failure, a cancelled statement. All are transient.
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(orig, psycopg.OperationalError)


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK)


def _first_line(exc: BaseException | None) -> str:
    text = str(exc).strip() if exc is not None else ""
    return text.splitlines()[0] if text else type(exc).__name__
