"""Running the real `zeroloop` command in a subprocess, with a private environment."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a CLI run: no ZEROLOOP_* from outside, a private data directory."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("ZEROLOOP_")}
    env["ZEROLOOP_DATA_DIR"] = str(tmp_path / "data")
    env["COLUMNS"] = "200"
    return env


@pytest.fixture
def zeroloop(cli_env: dict[str, str], tmp_path: Path) -> Run:
    """Run `zeroloop ARGS...` and return the completed process (never raises on exit status)."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "zeroloop", *args],
            env={**cli_env, **(env or {})},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run
