"""Benchmark the CLI's cost: the CPU seconds each read-only command takes, next to a bare interpreter's.

Run as `python -m bench.cli [--runs N]`. Against a fresh embedded store in a temporary data
directory it runs, in interleaved rounds (so a busy machine weighs on every line alike),
the baseline `python -c "import typer, rich.console, pydantic_settings"` (what any typer
CLI with settings pays) and each command, and prints per command the median CPU seconds
(user + system of the process, from its rusage) with the range over the runs, and its
ratio to the baseline's median. The targets it prints are the issue's: `--help` and
`config` within 1.5x of the baseline, `status` and `models ls` within 3x. Then what
importing `zeroloop.cli.main` pulls in (cumulative ms per library, `-X importtime`), and
whether torch, numpy or OpenSpiel were among the imports.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BASELINE = ("-c", "import typer, rich.console, pydantic_settings")
COMMANDS: tuple[tuple[tuple[str, ...], float | None], ...] = (
    (("--help",), 1.5),
    (("config",), 1.5),
    (("status",), 3.0),
    (("models", "ls"), 3.0),
    (("pipeline", "ls"), None),
    (("queue", "stats"), None),
    (("nodes", "ls"), None),
)
HEAVY = ("torch", "numpy", "pyspiel")  # no read-only command needs these
FAMILIES = (
    "typer", "rich", "pydantic", "pydantic_settings", "sqlalchemy", "alembic", "fsspec", "psutil", "fastapi",
    "uvicorn", "opentelemetry.sdk", "zeroloop.app",
)  # fmt: skip


def _env(data_dir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ZEROLOOP_")}
    env.update({"ZEROLOOP_DATA_DIR": str(data_dir), "COLUMNS": "150"})
    return env


def _cpu(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    """CPU seconds (user + system) the child process used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


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
    parser.add_argument("--runs", type=int, default=7, help="interleaved rounds (the median is reported)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zeroloop-bench-cli-") as tmp:
        cwd = Path(tmp)
        env = _env(cwd / "data")
        zeroloop = [sys.executable, "-m", "zeroloop"]
        _cpu([*zeroloop, "db", "upgrade"], env, cwd)
        base: list[float] = []
        spent: dict[tuple[str, ...], list[float]] = {args: [] for args, _target in COMMANDS}
        for _round in range(options.runs):
            base.append(_cpu([sys.executable, *BASELINE], env, cwd))
            for args, _target in COMMANDS:
                spent[args].append(_cpu([*zeroloop, *args], env, cwd))
        floor = statistics.median(base)
        print(f"CPU seconds per run, median [min-max] of {options.runs} interleaved runs, embedded store")
        print(f"{'baseline (typer, rich, pydantic_settings)':42} {floor:5.2f} [{min(base):.2f}-{max(base):.2f}]")
        for args, target in COMMANDS:
            times = spent[args]
            ratio = statistics.median(times) / floor
            verdict = "" if target is None else f"  target <= {target:g}x: {'met' if ratio <= target else 'MISSED'}"
            print(
                f"zeroloop {' '.join(args):33} {statistics.median(times):5.2f} [{min(times):.2f}-{max(times):.2f}]"
                f"  {ratio:4.2f}x{verdict}"
            )
        cost = _imports(env, cwd)
        print("\nimport zeroloop.cli.main, cumulative ms (a module shared by several counts in each):")
        for module in ("zeroloop.cli.main", *FAMILIES):
            print(f"  {cost.get(module, 0.0):7.0f}  {module}")
        heavy = [module for module in HEAVY if module in cost]
        print(f"heavy modules imported: {', '.join(heavy) or 'none'}")
        print(f"load average while measuring: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
