"""Benchmark the CLI's latency: how long read-only commands take to answer, and what they import.

Run as `python -m bench.cli [--runs N]`. Against a fresh embedded store in a temporary data
directory it prints, per command, the median and slowest wall time of N runs (seconds,
including the interpreter's start), then what importing `zeroloop.cli.main` costs, in
total and per library family (cumulative milliseconds, from `python -X importtime`), and
whether torch, numpy or OpenSpiel were among the imports. A quiet machine should answer each command in under a second.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = (
    ("--help",),
    ("status",),
    ("models", "ls"),
    ("pipeline", "ls"),
    ("config",),
    ("queue", "stats"),
)
HEAVY = ("torch", "numpy", "pyspiel")  # no read-only command needs these
FAMILIES = (
    "typer", "rich", "pydantic", "pydantic_settings", "sqlalchemy", "alembic", "fsspec", "psutil", "zeroloop.app",
)  # fmt: skip


def _env(data_dir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ZEROLOOP_")}
    env.update({"ZEROLOOP_DATA_DIR": str(data_dir), "COLUMNS": "150"})
    return env


def _time(args: tuple[str, ...], env: dict[str, str], cwd: Path) -> float:
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "zeroloop", *args], env=env, cwd=cwd, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"zeroloop {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return elapsed


def _imports(env: dict[str, str], cwd: Path) -> dict[str, float]:
    """Cumulative import time (ms) of zeroloop.cli.main and of each family of FAMILIES it pulls in."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import zeroloop.cli.main"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    cost: dict[str, float] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self, cumulative, name = line.removeprefix("import time:").split("|")
        module = name.strip()
        if module in (*FAMILIES, *HEAVY, "zeroloop.cli.main"):
            cost[module] = max(cost.get(module, 0.0), int(cumulative) / 1000)
    return cost


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per command (the median is reported)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zeroloop-bench-cli-") as tmp:
        cwd = Path(tmp)
        env = _env(cwd / "data")
        _time(("db", "upgrade"), env, cwd)
        print(f"{'command':24} {'median s':>9} {'max s':>7}   ({options.runs} runs, embedded store)")
        for args in COMMANDS:
            times = [_time(args, env, cwd) for _ in range(options.runs)]
            print(f"zeroloop {' '.join(args):15} {statistics.median(times):9.2f} {max(times):7.2f}")
        cost = _imports(env, cwd)
        print("\nimport zeroloop.cli.main, cumulative ms (a module shared by several counts in each):")
        for module in ("zeroloop.cli.main", *FAMILIES):
            print(f"  {cost.get(module, 0.0):7.0f}  {module}")
        heavy = [module for module in HEAVY if module in cost]
        print(f"heavy modules imported: {', '.join(heavy) or 'none'}")
        print(f"load average while measuring: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
