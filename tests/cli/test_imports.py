"""The CLI imports only what its commands need: no torch, numpy or OpenSpiel to list models or print help."""

from __future__ import annotations

import subprocess
import sys

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
