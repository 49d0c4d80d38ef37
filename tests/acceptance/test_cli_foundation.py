"""The foundation commands as a user runs them: config, doctor, db; and bad input."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.acceptance.conftest import Run
from zeroloop.store import migrate
from zeroloop.store.database import Store


def _tree(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    return {
        str(item.relative_to(path)): hashlib.sha256(item.read_bytes()).hexdigest() if item.is_file() else "dir"
        for item in sorted(path.rglob("*"))
    }


def test_help_is_available_on_every_command(zeroloop: Run) -> None:
    for args in ([], ["config"], ["doctor"], ["db"], ["db", "upgrade"], ["db", "status"]):
        result = zeroloop(*args, "--help")
        assert result.returncode == 0, result.stderr
        assert "Usage" in result.stdout


def test_doctor_passes_on_the_embedded_default_and_changes_nothing(zeroloop: Run, tmp_path: Path) -> None:
    result = zeroloop("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all checks passed" in result.stdout
    assert not (tmp_path / "data").exists()


def test_db_upgrade_creates_the_embedded_store_then_doctor_reports_its_schema(zeroloop: Run, tmp_path: Path) -> None:
    first = zeroloop("db", "upgrade")
    assert first.returncode == 0, first.stderr
    assert "upgraded from empty" in first.stdout
    assert "already at" in zeroloop("db", "upgrade").stdout
    assert zeroloop("db", "status").returncode == 0
    doctor = zeroloop("doctor")
    assert doctor.returncode == 0
    assert f"(schema {migrate.head_revision()})" in doctor.stdout


def test_config_prints_effective_settings_with_secrets_redacted(zeroloop: Run) -> None:
    result = zeroloop("config", "--json", env={"ZEROLOOP_STORE__URL": "postgresql://alice:hunter2@db.example/zl"})
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout
    assert "postgresql://alice:***@db.example/zl" in result.stdout
    assert '"poll_interval_s"' in result.stdout


@pytest.mark.parametrize("command", [["doctor"], ["db", "upgrade"], ["config"]])
def test_invalid_setting_is_one_line_naming_it(zeroloop: Run, command: list[str]) -> None:
    result = zeroloop(*command, env={"ZEROLOOP_EVENTS__POLL_INTERVAL_S": "fast"})
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "ZEROLOOP_EVENTS__POLL_INTERVAL_S" in result.stderr


def test_malformed_store_url_is_one_line_and_creates_nothing(zeroloop: Run, tmp_path: Path) -> None:
    result = zeroloop("db", "upgrade", env={"ZEROLOOP_STORE__URL": f"sqlite+magic:///{tmp_path}/data/x.db"})
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "unsupported scheme" in result.stderr
    assert not (tmp_path / "data").exists()
    doctor = zeroloop("doctor", env={"ZEROLOOP_STORE__URL": "mysql://u@h/db"})
    assert doctor.returncode == 1
    assert "unsupported scheme" in doctor.stdout


def test_unreachable_postgres_is_one_line(zeroloop: Run, tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://zl:pw@127.0.0.1:{port}/zl"
    result = zeroloop("db", "upgrade", env={"ZEROLOOP_STORE__URL": url})
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "cannot reach the store" in result.stderr
    assert not (tmp_path / "data").exists()


def test_newer_schema_is_refused_and_the_file_is_unchanged(zeroloop: Run, tmp_path: Path) -> None:
    assert zeroloop("db", "upgrade").returncode == 0
    db = tmp_path / "data" / "zeroloop.db"
    with Store(f"sqlite:///{db}") as store, store.transaction() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'a1b2c3d4'"))
    before = _tree(tmp_path / "data")
    for command in (["db", "upgrade"], ["db", "status"]):
        result = zeroloop(*command)
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.strip().count("\n") == 0
        assert "newer than this zeroloop" in result.stderr
    assert _tree(tmp_path / "data") == before
    assert zeroloop("doctor").returncode == 1


@contextlib.contextmanager
def _read_only_dir(path: Path) -> Iterator[None]:
    path.mkdir(parents=True)
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(0o755)
        return
    # root ignores permission bits; a read-only mount is what makes a directory read-only for it
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], check=False)
    if mounted.returncode != 0:
        pytest.skip("running as root and cannot mount a read-only tmpfs to make a read-only directory")
    try:
        yield
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_read_only_data_directory_is_one_clear_line(zeroloop: Run, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with _read_only_dir(data):
        result = zeroloop("db", "upgrade")
        assert result.returncode == 2
        assert result.stderr.strip().count("\n") == 0
        assert "not writable" in result.stderr
        assert list(data.iterdir()) == []
        doctor = zeroloop("doctor")
        assert doctor.returncode == 1
        assert "not writable" in doctor.stdout
