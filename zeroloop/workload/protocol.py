"""The workload protocol: four file-in, file-out operations that each return evidence.

The pipeline calls `workload.selfplay(request) -> Evidence` (and export, train, evaluate, and
optionally distill)
from a worker process. Requests are frozen dataclasses of plain values so they pickle
across process boundaries; every operation is synchronous CPU/GPU work and must never
run on an event loop. An operation that returns has written every declared output; one
that fails raises `WorkloadError`.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from zeroloop.config import baseline_kind, mctsbot_simulations
from zeroloop.errors import WorkloadError

Operation = Literal["selfplay", "export", "train", "evaluate", "distill"]
OPERATIONS: tuple[Operation, ...] = ("selfplay", "export", "train", "evaluate", "distill")
# What every workload must offer; `distill` is optional (a workload without it refuses distillation jobs).
REQUIRED_OPERATIONS: tuple[Operation, ...] = ("selfplay", "export", "train", "evaluate")

_HASH_CHUNK_BYTES = 1 << 20


class FileKind(enum.StrEnum):
    """The declared kind of a workload input or output file."""

    GAME_BATCH = "game_batch"
    TRAINING_WINDOW = "training_window"
    MODEL = "model"
    MATCH_RESULT = "match_result"


@dataclass(frozen=True)
class Player:
    """One side of an evaluation match: a model file or a baseline (`simulations`: an MCTSBot's)."""

    kind: Literal["model", "random", "mcts", "mctsbot"]
    model: Path | None = None
    simulations: int = 0

    @classmethod
    def of_model(cls, path: Path) -> Player:
        """A player that searches with the network stored in `path`."""
        return cls("model", Path(path))

    @classmethod
    def baseline(cls, name: str) -> Player:
        """The baseline `name` names: random, mcts, or mctsbot-N (WorkloadError for anything else)."""
        kind = baseline_kind(name)
        if kind is None:
            raise WorkloadError(f"{name!r} names no baseline: random, mcts or mctsbot-N")
        return cls(kind, simulations=mctsbot_simulations(name) if kind == "mctsbot" else 0)

    def label(self) -> str:
        """A short human-readable name, used in match results."""
        if self.model is not None:
            return f"model:{self.model.name}"
        return f"mctsbot-{self.simulations}" if self.kind == "mctsbot" else self.kind


@dataclass(frozen=True)
class SelfplayRequest:
    """Play `games` games of `config_key` with `model` (None: a fresh network) into `output`."""

    config_key: str
    output: Path
    games: int
    model: Path | None = None
    seed: int = 0


@dataclass(frozen=True)
class ExportRequest:
    """Build a training window of the newest `window_samples` positions of `inputs` (oldest first)."""

    config_key: str
    inputs: tuple[Path, ...]
    output: Path
    window_samples: int
    seed: int = 0


@dataclass(frozen=True)
class TrainRequest:
    """Train on `window` for `steps` optimizer steps into `output`.

    Without `steps`, `rows` (training rows to draw) sets ceil(rows / train_batch_size) steps,
    and without either the configured `train_steps` holds.

    Training starts from `init_model` when given, and resumes from `output` when that file
    is a checkpoint of an interrupted run on the same window.
    """

    config_key: str
    window: Path
    output: Path
    init_model: Path | None = None
    steps: int | None = None
    seed: int = 0
    rows: int | None = None


@dataclass(frozen=True)
class EvaluateRequest:
    """Play up to `games` games of `candidate` against `opponent`, alternating colours, into `output`."""

    config_key: str
    candidate: Player
    opponent: Player
    output: Path
    games: int
    seed: int = 0


@dataclass(frozen=True)
class DistillRequest:
    """Train a fresh `blocks` x `channels` network on `window`'s positions towards `teacher`'s policy and value.

    The student's value target is `value_mix` of the teacher's value plus the rest of the game
    outcome; `steps` optimizer steps (None: the configured `train_steps`) into `output`.
    """

    config_key: str
    teacher: Path
    window: Path
    output: Path
    blocks: int
    channels: int
    steps: int | None = None
    value_mix: float = 0.5
    seed: int = 0


@dataclass(frozen=True)
class OutputFile:
    """A file an operation wrote: its path, declared kind, size (bytes) and sha256 (hex)."""

    path: Path
    kind: FileKind
    size_bytes: int
    sha256: str

    @classmethod
    def describe(cls, path: Path, kind: FileKind) -> OutputFile:
        """Measure and hash the file at `path`."""
        return cls(Path(path), kind, Path(path).stat().st_size, file_sha256(path))


@dataclass(frozen=True)
class Evidence:
    """What an operation produced: its output files and counts (games, samples, steps, ...)."""

    operation: Operation
    config_key: str
    outputs: tuple[OutputFile, ...]
    counts: Mapping[str, float] = field(default_factory=dict)
    duration_s: float = 0.0


@dataclass(frozen=True)
class Progress:
    """A training progress report: step reached, mean loss over the last interval, throughput (samples/s)."""

    step: int
    total_steps: int
    loss: float
    policy_loss: float
    value_loss: float
    samples_per_s: float


ProgressCallback = Callable[[Progress], None]


def no_progress(progress: Progress) -> None:
    """The default progress callback: ignore the report."""


class Workload(Protocol):
    """What the loop runs for a config key: selfplay, export, train and evaluate."""

    def selfplay(self, request: SelfplayRequest) -> Evidence:
        """Play games and write one game batch."""
        ...

    def export(self, request: ExportRequest) -> Evidence:
        """Write one training window from game batches."""
        ...

    def train(self, request: TrainRequest, progress: ProgressCallback = no_progress) -> Evidence:
        """Train a model on a training window and write the model file."""
        ...

    def evaluate(self, request: EvaluateRequest) -> Evidence:
        """Play a match and write its result as JSON."""
        ...

    def distill(self, request: DistillRequest, progress: ProgressCallback = no_progress) -> Evidence:
        """Train a smaller network on a teacher's data and targets and write the model file (optional)."""
        ...


def file_sha256(path: Path) -> str:
    """The sha256 of the file at `path`, as 64 hex digits."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
