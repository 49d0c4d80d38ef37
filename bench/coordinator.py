"""Benchmark of the coordinator's own cost: its share of the loop's CPU, and its CPU when idle.

Two measurements, each in a fresh data directory (embedded SQLite):

- **share**: `zeroloop quickstart --workers W` on tic-tac-toe. After a warm-up, the CPU
  time (user + system, seconds) of the coordinator process (the quickstart process
  itself) and of every process of the loop (the coordinator's children, the detached
  workers of its data directory, their job children) is sampled with psutil over a fixed
  window; the share is coordinator CPU-s / the loop's CPU-s.
- **idle**: `zeroloop coordinator` with no pipeline and no worker; its CPU over a window,
  as a percentage of one core.

    .venv/bin/python -m bench.coordinator [--window-s 60] [--warmup-s 30] [--workers 2] [--idle-s 30]

A process that exits inside the window loses its last CPU since the previous sample
(samples every second); the workers and their job children live through the window.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

SAMPLE_S = 1.0


@dataclass
class TreeCpu:
    """CPU seconds (user + system) of one process and of its whole tree, accumulated over samples."""

    root_s: float = 0.0
    tree_s: float = 0.0


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _tree(root: psutil.Process, data_dir: Path) -> list[psutil.Process]:
    """The root, the workers of its data directory (started detached, so found by their environment), descendants."""
    tops = [root]
    for process in psutil.process_iter(["pid"]):
        try:
            if process.pid != root.pid and process.environ().get("ZEROLOOP_DATA_DIR") == str(data_dir):
                tops.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    found: dict[int, psutil.Process] = {}
    for top in tops:
        try:
            for process in [top, *top.children(recursive=True)]:
                found[process.pid] = process
        except psutil.NoSuchProcess:
            continue
    return list(found.values())


def _sample(root: psutil.Process, data_dir: Path) -> dict[int, float]:
    """CPU seconds of every live process of the loop, by pid (the coordinator under its own pid)."""
    seen: dict[int, float] = {}
    for process in _tree(root, data_dir):
        try:
            seen[process.pid] = _cpu_s(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return seen


def measure_tree(root: psutil.Process, data_dir: Path, window_s: float) -> TreeCpu:
    """The CPU the root and its loop spend during the next `window_s` seconds."""
    result = TreeCpu()
    start = _sample(root, data_dir)
    last = dict(start)
    end = time.monotonic() + window_s
    while time.monotonic() < end:
        time.sleep(SAMPLE_S)  # the sampling period of the measurement itself
        now = _sample(root, data_dir)
        for pid, cpu in now.items():
            last[pid] = cpu
            start.setdefault(pid, 0.0)  # born inside the window: all its CPU counts
    result.root_s = last.get(root.pid, 0.0) - start.get(root.pid, 0.0)
    result.tree_s = sum(last[pid] - start[pid] for pid in last)
    return result


def _env(data_dir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ZEROLOOP_")}
    env["ZEROLOOP_DATA_DIR"] = str(data_dir)
    env["ZEROLOOP_LOG_LEVEL"] = "WARNING"
    return env


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=90)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)  # the second one stops at once
        process.wait(timeout=30)


def share(workers: int, warmup_s: float, window_s: float) -> TreeCpu:
    """The coordinator's and the whole tree's CPU seconds over a window of a running quickstart."""
    with tempfile.TemporaryDirectory(prefix="zeroloop-bench-") as tmp:
        minutes = (warmup_s + window_s) / 60 + 2
        command = [sys.executable, "-m", "zeroloop", "quickstart", "--workers", str(workers), "--minutes", f"{minutes}"]
        process = subprocess.Popen(
            command, env=_env(Path(tmp)), cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            time.sleep(warmup_s)  # the warm-up: workers start and the first round begins
            return measure_tree(psutil.Process(process.pid), Path(tmp), window_s)
        finally:
            _stop(process)


def idle(warmup_s: float, window_s: float) -> float:
    """CPU of an idle `zeroloop coordinator` (no pipeline, no worker), percent of one core."""
    with tempfile.TemporaryDirectory(prefix="zeroloop-bench-") as tmp:
        command = [sys.executable, "-m", "zeroloop", "coordinator"]
        process = subprocess.Popen(
            command, env=_env(Path(tmp)), cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            time.sleep(warmup_s)  # start-up (imports, schema) is not idle time
            used = measure_tree(psutil.Process(process.pid), Path(tmp), window_s)
            return 100.0 * used.root_s / window_s
        finally:
            _stop(process)


def main() -> None:
    """Run both measurements and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="quickstart workers")
    parser.add_argument("--warmup-s", type=float, default=30.0, help="seconds before the window opens")
    parser.add_argument("--window-s", type=float, default=60.0, help="seconds measured")
    parser.add_argument("--idle-s", type=float, default=30.0, help="seconds of the idle measurement (0: skip)")
    args = parser.parse_args()
    loop = share(args.workers, args.warmup_s, args.window_s)
    percent = 100.0 * loop.root_s / loop.tree_s if loop.tree_s else 0.0
    print(
        f"quickstart, {args.workers} workers, {args.window_s:.0f} s window: coordinator {loop.root_s:.1f} CPU-s "
        f"of {loop.tree_s:.1f} CPU-s for the whole tree = {percent:.1f}% of the loop's CPU"
    )
    if args.idle_s > 0:
        print(f"idle coordinator: {idle(10.0, args.idle_s):.2f}% of one core over {args.idle_s:.0f} s")


if __name__ == "__main__":
    main()
