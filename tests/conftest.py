"""Fixtures shared by every test: settings in a temporary data directory, and stores on both backends.

PostgreSQL tests use the server named by ZEROLOOP_TEST_POSTGRES_URL (scripts/with-postgres
starts a throwaway one). Without it they skip locally and fail under CI=true. Each test
gets its own database, copied from a migrated template, so tests never see each other.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.engine import make_url

from tests.helpers import FakeClock, make_app
from tests.s3 import s3_endpoint, s3_location  # noqa: F401 - fixtures for every test package
from zeroloop import tracing
from zeroloop.app import App
from zeroloop.config import Settings
from zeroloop.events import wiring
from zeroloop.store import migrate
from zeroloop.store.database import Store

BACKENDS = ["sqlite", "postgresql"]
_TEMPLATE = f"zeroloop_tmpl_{os.getpid()}"


def postgres_admin_url() -> str:
    """The PostgreSQL server URL for tests, or skip (fail under CI=true) when there is none."""
    url = os.environ.get("ZEROLOOP_TEST_POSTGRES_URL")
    if not url:
        reason = "no PostgreSQL server: set ZEROLOOP_TEST_POSTGRES_URL or run via scripts/with-postgres"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (PostgreSQL tests may not skip under CI=true)")
        pytest.skip(reason)
    return url


def _admin_exec(sql: str) -> None:
    engine = sa.create_engine(make_url(postgres_admin_url()).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(sql)
    finally:
        engine.dispose()


def _database_url(name: str) -> str:
    return make_url(postgres_admin_url()).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def _pg_template() -> Iterator[str]:
    _admin_exec(f"DROP DATABASE IF EXISTS {_TEMPLATE}")
    _admin_exec(f"CREATE DATABASE {_TEMPLATE}")
    with Store(_database_url(_TEMPLATE)) as store:
        migrate.upgrade(store)
    yield _TEMPLATE
    _admin_exec(f"DROP DATABASE IF EXISTS {_TEMPLATE}")


def fresh_postgres_url(template: str | None = None) -> Iterator[str]:
    """Create an empty (or templated) database, yield its URL, drop it afterwards."""
    name = f"zeroloop_t_{uuid.uuid4().hex[:12]}"
    _admin_exec(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
    try:
        yield _database_url(name)
    finally:
        _admin_exec(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each test using this runs once per store backend."""
    if request.param == "postgresql":
        postgres_admin_url()
    return str(request.param)


@pytest.fixture
def empty_store_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database (no schema) on the backend under test."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    else:
        yield from fresh_postgres_url()


@pytest.fixture
def store_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of a migrated database on the backend under test."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
        with Store(url) as store:
            migrate.upgrade(store)
        yield url
    else:
        template = request.getfixturevalue("_pg_template")
        yield from fresh_postgres_url(template)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """An open store with the current schema, on each backend."""
    with Store(store_url) as opened:
        yield opened


@pytest.fixture
def pg_store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """A migrated PostgreSQL store, for behaviour only PostgreSQL has (skips without a server, fails in CI)."""
    postgres_admin_url()
    template = request.getfixturevalue("_pg_template")
    for url in fresh_postgres_url(template):
        with Store(url) as opened:
            yield opened


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings with a private data directory and no environment or zeroloop.toml leaking in."""
    for name in list(os.environ):
        if name.startswith("ZEROLOOP_") and name != "ZEROLOOP_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock starting at a fixed time."""
    return FakeClock()


@pytest.fixture
def app(store_url: str, tmp_path: Path, settings: Settings) -> Iterator[App]:
    """An App on the backend under test (the `settings` fixture keeps the environment out)."""
    with make_app(store_url, tmp_path) as opened:
        yield opened


# --- the wiring recording ---------------------------------------------------------------
# Every event type zeroloop's own code publishes, and every type a zeroloop consumer
# subscribes to, is recorded for the whole session (zeroloop.events.wiring.Recording).
# tests/badinput/test_wiring_recorded.py runs last and compares the recording with the
# catalogue and the declarations, when the session collected the whole suite.

WIRING_TEST = "tests/badinput/test_wiring_recorded.py"
FULL_SUITE = pytest.StashKey[bool]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the wiring comparison last, and note whether this session runs every test module."""
    last = [item for item in items if item.nodeid.startswith(WIRING_TEST)]
    if last:
        items[:] = [item for item in items if not item.nodeid.startswith(WIRING_TEST)] + last
    on_disk = {path.resolve() for path in Path(__file__).parent.rglob("test_*.py")}
    collected = {Path(str(item.path)).resolve() for item in items}
    filtered = bool(config.getoption("keyword", "") or config.getoption("markexpr", ""))
    config.stash[FULL_SUITE] = collected >= on_disk and not filtered


@pytest.fixture(scope="session", autouse=True)
def wiring_recording(request: pytest.FixtureRequest) -> Iterator[wiring.Recording]:
    """The session's recording of real publishes and subscriptions, written to .pytest_cache at the end."""
    recording = wiring.start_recording()
    yield recording
    wiring.stop_recording()
    cache = request.config.cache
    if cache is not None:
        target = cache.mkdir("zeroloop") / "wiring.json"
        target.write_text(json.dumps(recording.as_dict(), indent=1, sort_keys=True))


@pytest.fixture
def full_suite(request: pytest.FixtureRequest) -> bool:
    """Whether this session collected every test module with no -k/-m filter."""
    return request.config.stash.get(FULL_SUITE, False)


@pytest.fixture
def spans(settings: Settings) -> Iterator[InMemorySpanExporter]:
    """This process's spans, kept in memory while the test runs (the tracer is removed afterwards)."""
    exporter = InMemorySpanExporter()
    tracing.setup(settings, exporter=exporter)
    try:
        yield exporter
    finally:
        tracing.shutdown()
