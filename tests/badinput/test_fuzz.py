"""Arbitrary input never produces a traceback: only a result, a ZeroloopError, or a clean usage error.

Hypothesis feeds arbitrary strings and bytes to the settings (environment variables and
the settings file), the CLI's arguments, event and job payloads, and the files zeroloop
reads (the store file, a command file). Example counts are small so this runs in seconds.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from zeroloop.app import App
from zeroloop.cli.main import app as cli
from zeroloop.config import CONFIG_FILE_ENV, Settings, StoreSettings, known_env_names, load_settings
from zeroloop.errors import ConfigError, StoreError, WorkloadError, ZeroloopError
from zeroloop.events.bus import EventBus
from zeroloop.events.catalogue import EVENT_TYPES
from zeroloop.queue.manager import JobQueue
from zeroloop.workload.command import load_command_specs

QUICK = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Text an environment can hold: no NUL, no unpaired surrogates; names also without '='.
ENV_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
ENV_NAME = st.one_of(
    st.sampled_from(sorted(known_env_names()[0])),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00="), min_size=1, max_size=20).map(
        lambda tail: "ZEROLOOP_" + tail
    ),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A directory with no zeroloop.toml, current while the module runs, and an environment without ZEROLOOP_*."""
    path = tmp_path_factory.mktemp("fuzz")
    # The test harness's own variable stays: later tests of this module open PostgreSQL stores.
    clean = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("ZEROLOOP_") or key == "ZEROLOOP_TEST_POSTGRES_URL"
    }
    clean["ZEROLOOP_DATA_DIR"] = str(path / "data")
    before = Path.cwd()
    os.chdir(path)
    try:
        with mock.patch.dict(os.environ, clean, clear=True):
            yield path
    finally:
        os.chdir(before)


@QUICK
@given(env=st.dictionaries(ENV_NAME, ENV_TEXT, max_size=4))
def test_any_environment_gives_settings_or_one_config_error(workdir: Path, env: dict[str, str]) -> None:
    with mock.patch.dict(os.environ, env):
        try:
            load_settings()
        except ConfigError as exc:
            assert "\n" not in str(exc).strip()


@QUICK
@given(body=st.binary(max_size=200) | ENV_TEXT.map(str.encode))
def test_any_settings_file_gives_settings_or_one_config_error(workdir: Path, body: bytes) -> None:
    path = workdir / "fuzz.toml"
    path.write_bytes(body)
    with mock.patch.dict(os.environ, {CONFIG_FILE_ENV: str(path)}), contextlib.suppress(ConfigError):
        load_settings()


COMMANDS = [
    ["events", "tail"], ["events", "replay"], ["events", "stats"], ["events", "forget"],
    ["queue", "ls"], ["queue", "show"], ["queue", "retry"], ["queue", "cancel"], ["queue", "stats"],
    ["dlq", "ls"], ["dlq", "show"], ["dlq", "retry"], ["dlq", "drop"],
    ["models", "ls"], ["models", "show"], ["models", "promote"], ["models", "rollback"],
    ["pipeline", "ls"], ["pipeline", "pause"], ["pipeline", "resume"], ["pipeline", "decisions"],
    ["status"], ["health"], ["nodes", "ls"], ["nodes", "drain"], ["nodes", "undrain"], ["daemons", "ls"],
    ["config"], ["db", "status"],
]  # fmt: skip
OPTIONS = [
    "--type", "-t", "--config", "-c", "--limit", "-n", "--from", "--consumer", "--status", "--dead", "--all",
    "--interval", "--check", "--json", "1", "-1", "0", "99999999999999999999999", "nan", "NODE_LOST", "selfplay",
]  # fmt: skip
BLOCKING = {"--follow", "-f", "--watch", "-w"}  # these run until Ctrl-C


@QUICK
@given(
    command=st.sampled_from(COMMANDS),
    extra=st.lists(st.sampled_from(OPTIONS) | st.text(max_size=12), max_size=4),
)
def test_any_cli_arguments_end_cleanly(workdir: Path, command: list[str], extra: list[str]) -> None:
    args = command + [arg for arg in extra if arg not in BLOCKING and not arg.startswith(("-f", "-w"))]
    result = CliRunner().invoke(cli, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit | ZeroloopError):
        raise AssertionError(f"zeroloop {args!r} raised {result.exception!r}") from result.exception


@QUICK
@given(
    event_type=st.sampled_from(sorted(EVENT_TYPES)), values=st.lists(JSON, min_size=8, max_size=8), extra=st.booleans()
)
def test_any_event_payload_is_published_or_refused_with_an_event_error(
    app: App, event_type: str, values: list[Any], extra: bool
) -> None:
    fields = list(EVENT_TYPES[event_type].model_fields)
    payload = dict(zip(fields, values, strict=False)) | ({"\x00": 1} if extra else {})
    bus: EventBus = app.bus
    try:
        bus.publish(event_type, payload)
    except ZeroloopError as exc:
        assert not isinstance(exc, StoreError), exc  # refused at the boundary, never by the driver


@QUICK
@given(job_type=st.text(max_size=12), config_key=st.text(max_size=12), payload=JSON, result=JSON)
def test_any_job_is_enqueued_and_completed_or_refused_with_a_queue_error(
    app: App, job_type: str, config_key: str, payload: Any, result: Any
) -> None:
    queue: JobQueue = app.queue
    try:
        job = queue.enqueue(job_type, config_key, payload if isinstance(payload, dict) else {"v": payload})
        lease = queue.claim("fuzz", types=[job.type])
        assert lease is not None
        queue.complete(lease.job.id, lease.token, result)
    except ZeroloopError as exc:
        assert not isinstance(exc, StoreError), exc


@QUICK
@given(body=st.binary(max_size=4096))
def test_any_store_file_opens_or_is_one_store_error(tmp_path: Path, body: bytes) -> None:
    path = tmp_path / "fuzzed.db"
    path.write_bytes(body)
    for extra in ("-wal", "-shm"):
        Path(f"{path}{extra}").unlink(missing_ok=True)
    store = StoreSettings(url=f"sqlite:///{path}")  # type: ignore[arg-type]
    try:
        with App(Settings(data_dir=tmp_path / "data", store=store)) as opened:
            opened.queue.enqueue("selfplay", "c")
    except StoreError:
        pass


@QUICK
@given(body=st.binary(max_size=300) | st.text(max_size=300).map(lambda text: text.encode("utf-8", "surrogatepass")))
def test_any_command_file_loads_or_is_one_workload_error(tmp_path: Path, body: bytes) -> None:
    path = tmp_path / "commands.toml"
    path.write_bytes(body)
    with contextlib.suppress(WorkloadError):
        load_command_specs(path, 60.0)
