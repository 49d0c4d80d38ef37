"""The CLI imports only what its commands need: no torch, numpy or OpenSpiel to list models or print help."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "numpy", "pyspiel")


def _loaded_after(statement: str) -> set[str]:
    probe = f"import sys; {statement}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    return set(done.stdout.split())


def test_the_cli_and_its_read_only_modules_do_not_import_torch_numpy_or_openspiel() -> None:
    assert _loaded_after("import zeroloop.cli.main") == set()
    assert _loaded_after("import zeroloop.cli.quickstart, zeroloop.pipeline.ratings") == set()


def test_the_probe_sees_a_heavy_import() -> None:
    assert _loaded_after("import numpy") == {"numpy"}


# What a command pays for only when it runs: the CLI's help and `config` must not load the App,
# the store's drivers, alembic, the server or the tracing SDK (bench/cli.py prints the cost).
DEFERRED = (
    "zeroloop.app", "sqlalchemy", "alembic", "psycopg", "fastapi", "uvicorn", "jinja2", "fsspec",
    "opentelemetry.sdk", "prometheus_client", "psutil",
)  # fmt: skip


def _modules_after(statement: str) -> set[str]:
    probe = f"import sys; {statement}; print(' '.join(m for m in {DEFERRED!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    return set(done.stdout.split())


def test_importing_the_cli_loads_none_of_what_its_commands_load_when_they_run() -> None:
    assert _modules_after("import zeroloop.cli.main") == set()
    assert _modules_after("import zeroloop") == set()  # the package's public names load on first use
    assert "psycopg" not in _modules_after("import zeroloop.store.database")  # loaded with a PostgreSQL engine only


def test_the_deferred_probe_sees_a_loaded_module() -> None:
    assert _modules_after("import zeroloop.cli.main; from zeroloop import App") >= {"zeroloop.app", "sqlalchemy"}


def test_the_clis_role_names_are_the_token_roles() -> None:
    from zeroloop.cli.tokens import ROLES
    from zeroloop.control.tokens import Role

    assert tuple(role.value for role in Role) == ROLES


# --- a lean install: no torch, no OpenSpiel ------------------------------------------------
# A `sitecustomize` on PYTHONPATH puts a finder first on sys.meta_path that reports torch and
# OpenSpiel as not installed, so the subprocess behaves as `pip install zeroloop` without the
# `alphazero` extra would, in this environment that has them. The packages only the tests,
# and the `s3` and `otlp` extras, install are hidden too (httpx, moto, s3fs, the OTLP exporter).

BLOCKER = """
import importlib.abc
import sys

ABSENT = ("torch", "pyspiel", "open_spiel", "numba", "httpx", "httpcore", "moto", "s3fs", "hypothesis", "pytest")
ABSENT_DOTTED = ("opentelemetry.exporter",)


class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ABSENT or name.startswith(ABSENT_DOTTED):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Absent())
"""

# Modules only the built-in AlphaZero workload imports: they may need torch or OpenSpiel.
ALPHAZERO_ONLY = frozenset(
    f"zeroloop.workload.{name}"
    for name in (
        "alphazero",
        "diagnostics",
        "distill",
        "exhaustive",
        "games",
        "gumbel",
        "kernels",
        "match",
        "mcts",
        "members",
        "network",
        "progress",
        "selfplay",
        "symmetry",
        "train",
        "tree",
        "window",
    )
)


@pytest.fixture
def lean_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a subprocess without torch and OpenSpiel, with a private data directory."""
    site = tmp_path / "lean-site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = {key: value for key, value in os.environ.items() if not key.startswith("ZEROLOOP_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH", "")]))
    env["ZEROLOOP_DATA_DIR"] = str(tmp_path / "data")
    env["COLUMNS"] = "200"
    return env


def _lean(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_blocker_hides_torch_openspiel_and_the_test_only_packages(lean_env: dict[str, str], tmp_path: Path) -> None:
    for module in ("torch", "pyspiel", "httpx", "opentelemetry.exporter.otlp"):
        done = _lean(lean_env, "-c", f"import {module}", cwd=tmp_path)
        hidden = module if module != "opentelemetry.exporter.otlp" else "opentelemetry.exporter"
        assert done.returncode == 1 and f"No module named '{hidden}'" in done.stderr, module


def test_every_module_but_alphazero_imports_without_torch_and_openspiel(
    lean_env: dict[str, str], tmp_path: Path
) -> None:
    probe = (
        "import importlib, pkgutil, zeroloop\n"
        f"skip = {sorted(ALPHAZERO_ONLY)!r}\n"
        "names = [m.name for m in pkgutil.walk_packages(zeroloop.__path__, 'zeroloop.') if m.name not in skip]\n"
        "names = [n for n in names if '.migrations.' not in n and n != 'zeroloop.__main__']\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "print(len(names))\n"
    )
    done = _lean(lean_env, "-c", probe, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 100  # the server, the coordinator, the daemons, the command workload, the CLI


def test_help_config_and_doctor_run_without_torch_and_openspiel(lean_env: dict[str, str], tmp_path: Path) -> None:
    commands = tmp_path / "commands.toml"
    commands.write_text('[selfplay]\ncommand = "true {output}"\n')
    command_env = {**lean_env, "ZEROLOOP_WORKLOAD__KIND": "command", "ZEROLOOP_WORKLOAD__COMMAND_FILE": str(commands)}
    for args in (["--help"], ["config"], ["serve", "--help"], ["coordinator", "--help"]):
        done = _lean(lean_env, "-m", "zeroloop", *args, cwd=tmp_path)
        assert done.returncode == 0, (args, done.stderr)
    done = _lean(command_env, "-m", "zeroloop", "doctor", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pip install 'zeroloop[alphazero]'" in done.stdout  # a warning, not a failure, for a command workload


def test_choosing_alphazero_without_the_extra_is_one_clear_error(lean_env: dict[str, str], tmp_path: Path) -> None:
    done = _lean(lean_env, "-m", "zeroloop", "doctor", cwd=tmp_path)
    assert done.returncode == 1
    assert "pip install 'zeroloop[alphazero]'" in done.stdout
    done = _lean(lean_env, "-m", "zeroloop", "worker", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert "torch" in line and "pip install 'zeroloop[alphazero]'" in line
    probe = (
        "from zeroloop.config import WorkloadSettings\n"
        "from zeroloop.errors import WorkloadError\n"
        "from zeroloop.workload.factory import make_workload\n"
        "try:\n"
        "    make_workload(WorkloadSettings())\n"
        "except WorkloadError as exc:\n"
        "    print(exc)\n"
    )
    done = _lean(lean_env, "-c", probe, cwd=tmp_path)
    assert "pip install 'zeroloop[alphazero]'" in done.stdout, done.stderr
