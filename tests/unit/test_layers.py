"""The package's rooms and the direction of their imports, read from the source (every import, typing ones too).

docs/architecture.md draws the same picture: the CLI and the server on top, the
composition root (app, bootstrap) below them, then the domain rooms, then events, queue
and artifacts, the store, and the foundations. A lower room never imports a higher one,
and nothing below the composition root names it, not even for typing: a part receives
the protocols of zeroloop.ports instead.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "zeroloop"

# Rooms from the top down: a module may import its own room and any room further down the list.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"zeroloop", "__main__", "cli", "server"}),
    frozenset({"app", "bootstrap"}),
    frozenset(
        {"control", "remote", "pipeline", "tune", "fleet", "alerts", "ops", "cluster", "daemons", "ports", "workload"}
    ),
    frozenset({"events", "queue", "artifacts"}),
    frozenset({"store"}),
    frozenset({"config", "plugins", "profiles", "errors", "tracing", "tracing_export", "logs"}),
)
TOP = LAYERS[0] | LAYERS[1]


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "zeroloop"


def _imports(source: str) -> list[tuple[int, str]]:
    """Every zeroloop module `source` imports, wherever the import stands (functions, TYPE_CHECKING blocks)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "zeroloop":
                found += [(node.lineno, f"zeroloop.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name == "zeroloop" or name.startswith("zeroloop.")]


def _level(room: str) -> int:
    for index, rooms in enumerate(LAYERS):
        if room in rooms:
            return index
    raise AssertionError(f"room {room!r} is in no layer of this test: place it (and in docs/architecture.md)")


def _violations(modules: dict[str, str]) -> list[str]:
    problems = []
    for module, source in sorted(modules.items()):
        room = _room(module)
        for line, target in _imports(source):
            target_room = _room(target)
            if room not in TOP and target_room in TOP:
                problems.append(f"{module}:{line} imports {target}, above the composition root's line")
            elif _level(target_room) < _level(room):
                problems.append(f"{module}:{line} ({room}) imports {target} ({target_room}), a higher room")
    return problems


def _package() -> dict[str, str]:
    return {_module(path): path.read_text() for path in PACKAGE.rglob("*.py")}


def test_every_import_points_down_and_nothing_below_the_root_names_it() -> None:
    assert _violations(_package()) == []


def test_the_check_sees_an_app_import_hidden_for_typing_and_one_inside_a_function() -> None:
    hidden = textwrap.dedent(
        """
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from zeroloop.app import App

        def later():
            import zeroloop.server.api
        """
    )
    upward = "from zeroloop.pipeline import jobs\n"
    found = _violations({"zeroloop.cluster.nodes": hidden, "zeroloop.store.database": upward})
    assert found == [
        "zeroloop.cluster.nodes:4 imports zeroloop.app, above the composition root's line",
        "zeroloop.cluster.nodes:7 imports zeroloop.server.api, above the composition root's line",
        "zeroloop.store.database:1 (store) imports zeroloop.pipeline (pipeline), a higher room",
    ]


def test_the_workload_needs_nothing_of_the_loop_around_it() -> None:
    """A workload (built in or a user's) is plain compute: it imports only the foundations and itself."""
    allowed = {"workload", *LAYERS[-1]}
    problems = [
        f"{module}:{line} imports {target}"
        for module, source in _package().items()
        if _room(module) == "workload"
        for line, target in _imports(source)
        if _room(target) not in allowed
    ]
    assert problems == []


@pytest.mark.slow
def test_mypy_refuses_a_worker_daemon_that_reaches_for_the_store(tmp_path: Path) -> None:
    """The worker profiles' factories take DaemonContext[WorkerParts]: touching the store does not type-check."""
    from mypy import api

    probe = tmp_path / "probe.py"
    probe.write_text(
        textwrap.dedent(
            """
            from zeroloop.daemons.daemon import DaemonContext
            from zeroloop.ports import AppParts, WorkerParts

            def worker_daemon(context: DaemonContext[WorkerParts]) -> object:
                return context.parts.store

            def leader_daemon(context: DaemonContext[AppParts]) -> object:
                return context.parts.store
            """
        )
    )
    out, _err, status = api.run(["--strict", "--no-error-summary", "--follow-imports=silent", str(probe)])
    assert status == 1
    assert [line.split(": error: ")[1] for line in out.splitlines() if ": error: " in line] == [
        '"WorkerParts" has no attribute "store"  [attr-defined]'
    ]
