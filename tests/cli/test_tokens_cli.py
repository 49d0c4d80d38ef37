"""`zeroloop tokens create` says what the first token does before it does it, and what each role is for.

Pasting the viewer example while a quickstart ran used to close the loopback door without a
word, and told the user to give a viewer token "to the worker".
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zeroloop.app import App
from zeroloop.cli.main import app as cli
from zeroloop.cli.tokens import FIRST_TOKEN
from zeroloop.config import load_settings
from zeroloop.control.tokens import Tokens


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in list(os.environ):
        if key.startswith("ZEROLOOP_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZEROLOOP_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def _usable(data_dir: Path) -> int:
    with App(load_settings()) as zl:
        return len([row for row in Tokens(zl.store).list() if row["revoked_at"] is None])


def test_the_first_token_is_announced_before_it_is_made_and_each_role_says_what_it_is_for(data_dir: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(cli, ["tokens", "create", "--role", "viewer"], terminal_width=200)
    assert first.exit_code == 0, first.output
    assert " ".join(FIRST_TOKEN.split()[:6]) in " ".join(first.stderr.split())
    assert "/login" in first.stdout and "worker" not in first.stdout
    second = runner.invoke(cli, ["tokens", "create", "--role", "worker", "--node", "gpu-1"], terminal_width=200)
    assert second.exit_code == 0 and "first token" not in second.stderr
    assert "worker of node gpu-1 as ZEROLOOP_SERVER__TOKEN" in second.stdout
    admin = runner.invoke(cli, ["tokens", "create", "--role", "admin"], terminal_width=200)
    assert admin.exit_code == 0 and "to act there" in admin.stdout
    assert _usable(data_dir) == 3


@pytest.mark.timeout(120)
def test_at_a_terminal_the_first_token_waits_for_a_yes(data_dir: Path) -> None:
    """stdin a real terminal (a pty): answering no creates nothing; --yes asks nothing."""
    leader, follower = os.openpty()
    try:
        os.write(leader, b"n\n")  # the answer waits in the terminal's line buffer until the prompt reads it
        refused = subprocess.run(
            [sys.executable, "-m", "zeroloop", "tokens", "create", "--role", "viewer"],
            stdin=follower, capture_output=True, text=True, timeout=90, env=os.environ.copy(), check=False,
        )  # fmt: skip
    finally:
        os.close(follower)
        os.close(leader)
    assert refused.returncode == 1, refused
    assert "create it?" in refused.stderr and "zl_" not in refused.stdout
    assert _usable(data_dir) == 0
    taken = subprocess.run(
        [sys.executable, "-m", "zeroloop", "tokens", "create", "--role", "viewer", "--yes"],
        capture_output=True, text=True, timeout=90, env=os.environ.copy(), check=False,
    )  # fmt: skip
    assert taken.returncode == 0 and "zl_" in taken.stdout, taken.stderr
    assert _usable(data_dir) == 1
