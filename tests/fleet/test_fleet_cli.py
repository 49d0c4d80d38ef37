"""Bad fleet input at the command line: one clear line each, a non-zero exit, and nothing launched.

Each case is a real `zeroloop nodes launch` (or `providers ls --check`) in a subprocess,
with the pool settings in a zeroloop.toml of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from zeroloop.store.database import Store
from zeroloop.store.schema import nodes

GOOD_POOL = """
[providers.cpu]
kind = "command"
max_nodes = 2
[providers.cpu.options]
launch = "{python} -c 'import sys; sys.exit(0)'"
terminate = "{python} -c 'import sys; sys.exit(0)'"
list = "{python} -c 'print(\\"[]\\")'"
"""


def _zeroloop(tmp_path: Path, toml: str, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "zeroloop.toml").write_text(f'data_dir = "{tmp_path / "data"}"\n' + toml)
    env = {key: value for key, value in os.environ.items() if not key.startswith("ZEROLOOP_")}
    env["COLUMNS"] = "300"
    return subprocess.run(
        [sys.executable, "-m", "zeroloop", *args], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )


CASES = {
    "unknown provider kind": (
        '[providers.x]\nkind = "nope"\n',
        ("nodes", "launch", "--provider", "x"),
        "providers.x.kind: unknown kind 'nope'; known kinds: command, local, skypilot, slurm",
    ),
    "unknown pool": (
        GOOD_POOL,
        ("nodes", "launch", "--provider", "gpu"),
        "unknown provider pool 'gpu'; known pools: cpu",
    ),
    "missing provider command": (
        GOOD_POOL.replace('launch = "{python}', 'launch = "no-such-cloud-cli'),
        ("nodes", "launch", "--provider", "cpu"),
        "the launch command's program 'no-such-cloud-cli' is not on PATH",
    ),
    "budget of 0": (
        GOOD_POOL + "[autoscaler]\nbudget_per_hour = 0\n",
        ("nodes", "launch", "--provider", "cpu"),
        "autoscaler.budget_per_hour",
    ),
    "max_nodes below min_nodes": (
        '[providers.x]\nkind = "local"\nmin_nodes = 3\nmax_nodes = 1\n',
        ("nodes", "launch", "--provider", "x"),
        "max_nodes (1) is below min_nodes (3)",
    ),
    "more than max_nodes": (
        GOOD_POOL,
        ("nodes", "launch", "--provider", "cpu", "--count", "3"),
        "pool cpu has 0 node(s) of max_nodes 2: cannot launch 3 more",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_fleet_input_is_one_clear_line_a_non_zero_exit_and_nothing_launched(tmp_path: Path, case: str) -> None:
    toml, args, expected = CASES[case]
    done = _zeroloop(tmp_path, toml.replace("{python}", sys.executable), *args)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    assert all(line in errors or " INFO " in line for line in lines), done.stderr  # the rest: a first start's log
    assert expected in errors[0], errors[0]
    assert "Traceback" not in done.stdout + done.stderr
    store_file = tmp_path / "data" / "zeroloop.db"
    if store_file.exists():  # refused after the store was opened: nothing launched, nothing recorded
        with Store(f"sqlite:///{store_file}") as store, store.read() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(nodes)).scalar_one() == 0


def test_providers_ls_check_names_the_broken_pool_and_exits_1(tmp_path: Path) -> None:
    toml = GOOD_POOL.replace('launch = "{python}', 'launch = "no-such-cloud-cli').replace("{python}", sys.executable)
    done = _zeroloop(tmp_path, toml, "providers", "ls", "--check")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no-such-cloud-cli" in done.stdout
