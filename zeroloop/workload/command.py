"""The command workload: a user's own engine plugged in through command templates in a TOML file.

Each operation maps to a command line with `{placeholder}` fields for its input and
output paths and parameters (see docs/workload.md). The template is split like a shell
would split it *before* substitution, so a path with spaces stays one argument; a token
that is exactly `{inputs}` becomes one argument per input file. The command runs without
a shell, its output goes to the log line by line (bounded: see `output`), and it must
finish within its timeout.
Exit status 0 is not enough: every declared output must exist and parse as its kind.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import string
import subprocess
import threading
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from zeroloop.errors import WorkloadError
from zeroloop.workload.datafiles import read_npz
from zeroloop.workload.output import CommandOutput
from zeroloop.workload.protocol import (
    OPERATIONS,
    DistillRequest,
    EvaluateRequest,
    Evidence,
    ExportRequest,
    FileKind,
    Operation,
    OutputFile,
    Player,
    ProgressCallback,
    SelfplayRequest,
    TrainRequest,
    no_progress,
)

log = logging.getLogger(__name__)

ModelFormat = Literal["opaque", "zeroloop"]
_COMMON = ("config_key", "output", "seed")
PLACEHOLDERS: Mapping[Operation, tuple[str, ...]] = {
    "selfplay": (*_COMMON, "model", "games"),
    "export": (*_COMMON, "inputs", "window_samples"),
    "train": (*_COMMON, "window", "init_model", "steps"),
    "evaluate": (*_COMMON, "candidate", "opponent", "games"),
    "distill": (*_COMMON, "teacher", "window", "blocks", "channels", "steps"),
}
_SECTION_KEYS = frozenset({"command", "timeout_s", "model_format", "cwd"})


@dataclass(frozen=True)
class CommandSpec:
    """One operation's command: the template split into tokens, its timeout (seconds) and working directory."""

    operation: Operation
    tokens: tuple[str, ...]
    timeout_s: float
    model_format: ModelFormat = "opaque"
    cwd: Path | None = None

    @classmethod
    def parse(
        cls, operation: Operation, section: Mapping[str, Any], default_timeout_s: float, source: str
    ) -> CommandSpec:
        """Check one `[operation]` table; unknown keys and unknown or malformed placeholders are WorkloadErrors."""
        unknown = sorted(set(section) - _SECTION_KEYS)
        if unknown:
            raise WorkloadError(f"{source} [{operation}] has unknown keys {unknown}; allowed: {sorted(_SECTION_KEYS)}")
        template = section.get("command")
        if not isinstance(template, str) or not template.strip():
            raise WorkloadError(f"{source} [{operation}] needs a non-empty string 'command'")
        try:
            tokens = tuple(shlex.split(template))
        except ValueError as exc:
            raise WorkloadError(f"{source} [{operation}] command cannot be split: {exc}") from None
        allowed = PLACEHOLDERS[operation]
        for token in tokens:
            for name in _fields(token, operation, source):
                if name not in allowed:
                    raise WorkloadError(
                        f"{source} [{operation}] uses unknown placeholder {{{name}}}; allowed: "
                        + ", ".join(f"{{{n}}}" for n in allowed)
                    )
        model_format = section.get("model_format", "opaque")
        if model_format not in ("opaque", "zeroloop"):
            raise WorkloadError(
                f"{source} [{operation}] model_format must be 'opaque' or 'zeroloop', not {model_format!r}"
            )
        timeout = float(section.get("timeout_s", default_timeout_s))
        if timeout <= 0:
            raise WorkloadError(f"{source} [{operation}] timeout_s must be positive, got {timeout}")
        cwd = section.get("cwd")
        return cls(operation, tokens, timeout, model_format, Path(cwd) if cwd is not None else None)

    def argv(self, values: Mapping[str, str | list[str]]) -> list[str]:
        """The command line with placeholders filled; a token that is exactly a list placeholder expands to many."""
        argv: list[str] = []
        for token in self.tokens:
            names = list(_fields(token, self.operation, "command"))
            if len(names) == 1 and token == "{" + names[0] + "}" and isinstance(values[names[0]], list):
                argv.extend(values[names[0]])
                continue
            flat = {name: (" ".join(v) if isinstance(v, list) else v) for name, v in values.items()}
            argv.append(token.format(**flat))
        return argv


def _fields(token: str, operation: str, source: str) -> list[str]:
    try:
        parsed = list(string.Formatter().parse(token))
    except ValueError as exc:
        raise WorkloadError(f"{source} [{operation}] has a malformed placeholder in {token!r}: {exc}") from None
    names = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name or spec or conversion:
            shown = "{" + name + ("!" + conversion if conversion else "") + (":" + spec if spec else "") + "}"
            raise WorkloadError(f"{source} [{operation}] placeholder {shown} must be a plain name such as {{output}}")
        names.append(name)
    return names


def load_command_specs(path: Path, default_timeout_s: float) -> dict[Operation, CommandSpec]:
    """Read and check a command TOML file; every problem is a WorkloadError naming the file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise WorkloadError(f"cannot read command file {path}: {exc}") from None
    unknown = sorted(set(data) - set(OPERATIONS))
    if unknown:
        raise WorkloadError(f"command file {path} has unknown sections {unknown}; allowed: {list(OPERATIONS)}")
    specs: dict[Operation, CommandSpec] = {}
    for operation in OPERATIONS:
        if operation in data:
            specs[operation] = CommandSpec.parse(operation, data[operation], default_timeout_s, str(path))
    return specs


def run_command(argv: list[str], timeout_s: float, cwd: Path | None, prefix: str) -> None:
    """Run `argv`, logging its output (bounded: see `output`).

    A timeout, a launch failure or a nonzero exit is a WorkloadError quoting the output's tail.
    """
    log.info("%s: running %s", prefix, shlex.join(argv))
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
    except OSError as exc:
        raise WorkloadError(f"{prefix}: cannot start {argv[0]!r}: {exc}") from None
    output = CommandOutput(prefix, log)
    assert proc.stdout is not None  # guaranteed by stdout=PIPE
    reader = threading.Thread(target=output.pump, args=(proc.stdout,), daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        # The command may have started children; the whole session goes, not just the leader.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        code = None
    finally:
        reader.join()
        proc.stdout.close()
    if code is None:
        raise WorkloadError(f"{prefix}: {shlex.join(argv)} ran past its timeout of {timeout_s:g} s and was killed")
    if code != 0:
        raise WorkloadError(f"{prefix}: {shlex.join(argv)} exited with status {code}; last output: {output.summary()}")


def verify_output(path: Path, kind: FileKind, model_format: ModelFormat, operation: str) -> dict[str, float]:
    """Check that `path` exists and parses as `kind`; counts read from it (games, arrays, wins, ...)."""
    if not path.is_file():
        raise WorkloadError(f"{operation} command exited 0 but did not write its {kind.value} output {path}")
    if path.stat().st_size == 0:
        raise WorkloadError(f"{operation} command wrote an empty {kind.value} output {path}")
    counts: dict[str, float] = {}
    if kind in (FileKind.GAME_BATCH, FileKind.TRAINING_WINDOW):
        arrays = read_npz(path)
        counts["arrays"] = len(arrays)
        for name in ("num_games", "source_samples"):
            if name in arrays and arrays[name].shape == () and arrays[name].dtype.kind in "iuf":
                counts[name] = float(arrays[name])
        # Samples are positions: the leading axis of the observations (or of the first array that has one).
        with_axis = sorted((name != "obs", name) for name, array in arrays.items() if array.ndim >= 1)
        counts["samples"] = float(arrays[with_axis[0][1]].shape[0]) if with_axis else 0.0
    elif kind is FileKind.MODEL and model_format == "zeroloop":
        from zeroloop.workload.network import load_model_file  # here: a command-only worker need not load torch

        load_model_file(path)
    elif kind is FileKind.MATCH_RESULT:
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise WorkloadError(f"{operation} command wrote {path}, which is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise WorkloadError(f"{operation} command wrote {path}, which is JSON but not an object")
        counts.update({k: float(v) for k, v in data.items() if isinstance(v, int | float) and not isinstance(v, bool)})
    return counts


def _player(player: Player) -> str:
    return str(player.model) if player.model is not None else player.label()


class CommandWorkload:
    """A `Workload` that runs the user's commands from a TOML file and verifies what they wrote."""

    def __init__(self, command_file: Path, default_timeout_s: float) -> None:
        self.command_file = Path(command_file)
        self.specs = load_command_specs(self.command_file, default_timeout_s)

    def _run(
        self, operation: Operation, config_key: str, output: Path, kind: FileKind, values: dict[str, str | list[str]]
    ) -> Evidence:
        spec = self.specs.get(operation)
        if spec is None:
            raise WorkloadError(f"command file {self.command_file} has no [{operation}] section")
        began = time.perf_counter()
        values = {"config_key": config_key, "output": str(output), **values}
        run_command(spec.argv(values), spec.timeout_s, spec.cwd, f"{operation} {config_key}")
        counts = verify_output(Path(output), kind, spec.model_format, operation)
        described = OutputFile.describe(output, kind)
        return Evidence(operation, config_key, (described,), counts, time.perf_counter() - began)

    def selfplay(self, request: SelfplayRequest) -> Evidence:
        """Run the selfplay command; its output must be an NPZ game batch."""
        values: dict[str, str | list[str]] = {
            "model": str(request.model) if request.model is not None else "",
            "games": str(request.games),
            "seed": str(request.seed),
        }
        return self._run("selfplay", request.config_key, request.output, FileKind.GAME_BATCH, values)

    def export(self, request: ExportRequest) -> Evidence:
        """Run the export command; its output must be an NPZ training window."""
        values: dict[str, str | list[str]] = {
            "inputs": [str(p) for p in request.inputs],
            "window_samples": str(request.window_samples),
            "seed": str(request.seed),
        }
        return self._run("export", request.config_key, request.output, FileKind.TRAINING_WINDOW, values)

    def train(self, request: TrainRequest, progress: ProgressCallback = no_progress) -> Evidence:
        """Run the train command; its output must be a non-empty model file (loadable, for model_format zeroloop)."""
        values: dict[str, str | list[str]] = {
            "window": str(request.window),
            "init_model": str(request.init_model) if request.init_model is not None else "",
            "steps": str(request.steps) if request.steps is not None else "",
            "seed": str(request.seed),
        }
        return self._run("train", request.config_key, request.output, FileKind.MODEL, values)

    def evaluate(self, request: EvaluateRequest) -> Evidence:
        """Run the evaluate command; its output must be a JSON object (wins, draws, losses, ... are reported)."""
        values: dict[str, str | list[str]] = {
            "candidate": _player(request.candidate),
            "opponent": _player(request.opponent),
            "games": str(request.games),
            "seed": str(request.seed),
        }
        return self._run("evaluate", request.config_key, request.output, FileKind.MATCH_RESULT, values)

    def distill(self, request: DistillRequest, progress: ProgressCallback = no_progress) -> Evidence:
        """Run the distill command (a `[distill]` section; without one, a WorkloadError): it must write a model file."""
        values: dict[str, str | list[str]] = {
            "teacher": str(request.teacher),
            "window": str(request.window),
            "blocks": str(request.blocks),
            "channels": str(request.channels),
            "steps": str(request.steps) if request.steps is not None else "",
            "seed": str(request.seed),
        }
        return self._run("distill", request.config_key, request.output, FileKind.MODEL, values)
