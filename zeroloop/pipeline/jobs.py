"""The pipeline job types, each declared once in `TYPES`: its payload, how a worker runs it, what it announces.

The coordinator and the schedulers enqueue these; the job executor looks a job's type up
here and parses its payload with the same model, so a malformed job fails loudly at the
worker with the field named. A `JobType` holds everything the executor needs to know of
a type; the executor itself has no branch per type. docs/pipeline.md, "Adding a job
type", says how to add one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from zeroloop.artifacts.transfer import ArtifactKind
from zeroloop.config import baseline_kind
from zeroloop.errors import QueueError, WorkloadError
from zeroloop.pipeline.registry import model_id_for
from zeroloop.workload.elo import elo_estimate
from zeroloop.workload.protocol import (
    DistillRequest,
    EvaluateRequest,
    ExportRequest,
    Player,
    SelfplayRequest,
    TrainRequest,
)

if TYPE_CHECKING:
    from zeroloop.ports import ArtifactPort, ModelPort
    from zeroloop.queue.jobs import Job, Outcome

SELFPLAY, EXPORT, TRAIN, EVALUATE = "selfplay", "export", "train", "evaluate"
DISTILL = "distill"


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SelfplayJob(_Payload):
    """Play `games` games with the config's production model at the time the job starts."""

    games: int = Field(ge=1)
    seed: int = 0


class ExportJob(_Payload):
    """Build training window `iteration` from these game batches (sha256s, oldest first).

    `new_samples` is how many samples selfplay added since the last round: what the round's
    training is sized by when `pipeline.train_samples_per_sample` is set.
    """

    iteration: int = Field(ge=0)
    inputs: list[str] = Field(min_length=1)
    window_samples: int = Field(ge=1)
    new_samples: int = Field(default=0, ge=0)
    seed: int = 0


class TrainJob(_Payload):
    """Train candidate `iteration` on a window, starting from the production model if there is one.

    `rows` is how many training rows to draw (pipeline.train_samples_per_sample x the round's
    new samples; the workload runs ceil(rows / its batch size) steps, a variant's tuned batch size
    included); None: the workload's configured `train_steps`.
    """

    iteration: int = Field(ge=0)
    window_sha256: str
    init_model_id: str | None = None
    init_model_sha256: str | None = None
    rows: int | None = Field(default=None, ge=1)
    seed: int = 0


class EvaluateJob(_Payload):
    """Play a model against another (`opponent` = its id) or a baseline.

    `purpose` is `gate` for a candidate's round (`iteration` is the round) and `tournament`
    for a pairing of a scheduled round robin (`iteration` is the tournament's number),
    whose results only feed the ratings and the watchdog.
    """

    iteration: int = Field(ge=0)
    model_id: str
    model_sha256: str
    opponent: str
    opponent_kind: Literal["model", "random", "mcts", "mctsbot"]
    opponent_sha256: str | None = None
    games: int = Field(ge=1)
    seed: int = 0
    purpose: Literal["gate", "tournament"] = "gate"


def baseline_opponent(name: str) -> Literal["random", "mcts", "mctsbot"]:
    """The `opponent_kind` of an evaluate job against the baseline `name` (QueueError if it names none)."""
    kind = baseline_kind(name)
    if kind is None:
        raise QueueError(f"{name!r} names no baseline: random, mcts or mctsbot-N")
    return kind


class DistillJob(_Payload):
    """Train a fresh `blocks` x `channels` network on a window towards a teacher model's policy and value.

    `iteration` is the teacher's round, which the student's model id carries; `steps` None
    trains the configured `train_steps`; `value_mix` is the teacher's share of the value target.
    """

    teacher_id: str
    teacher_sha256: str
    window_sha256: str
    iteration: int = Field(ge=0)
    blocks: int = Field(ge=0)
    channels: int = Field(ge=1)
    steps: int | None = Field(default=None, ge=1)
    value_mix: float = Field(default=0.5, ge=0, le=1)
    seed: int = 0


P = TypeVar("P", bound=_Payload)
C = TypeVar("C")

# --- what a job type's hooks receive and return -------------------------------------------


@dataclass(frozen=True)
class Parts:
    """What preparing a job may touch: the worker's artifacts and models, and the job's own work directory."""

    artifacts: ArtifactPort
    models: ModelPort
    workdir: Path


@dataclass(frozen=True)
class Prepared:
    """A job made ready to run: the workload operation, its request (local paths), and where its output goes."""

    operation: str
    request: Any
    output: Path


@dataclass(frozen=True)
class Started(Generic[P]):
    """A job about to run on `node`."""

    job: Job
    payload: P
    node: str


@dataclass(frozen=True)
class Progress:
    """A progress report of a running job's workload (e.g. step, loss, samples_per_s)."""

    job: Job
    report: Mapping[str, float]


@dataclass(frozen=True)
class Finished(Generic[P]):
    """A job whose output is stored: the artifact's sha256 and the evidence's counts.

    `samples` is the positions or samples the evidence counts; `elo_confidence` the
    confidence level (0-1) of Elo intervals, `workload.elo_confidence`.
    """

    job: Job
    payload: P
    sha256: str
    counts: Mapping[str, float]
    samples: int
    elo_confidence: float


@dataclass(frozen=True)
class JobEvent(Generic[C]):
    """An event a job type publishes: its type (declared in zeroloop.events.catalogue) and how its payload is built.

    `config_key` and `job_id` lead the payload; `payload` adds the rest. `dedup` formats
    the event's dedup key from `type`, `job_id` and `attempt`; None publishes without one.
    """

    type: str
    payload: Callable[[C], dict[str, Any]]
    dedup: str | None = "{type}:{job_id}"

    def build(self, job: Job, context: C) -> Outcome:
        """The event for `job`: (type, payload led by its config key and id, dedup key of its current attempt)."""
        payload = {"config_key": job.config_key, "job_id": job.id, **self.payload(context)}
        dedup = None if self.dedup is None else self.dedup.format(type=self.type, job_id=job.id, attempt=job.attempts)
        return self.type, payload, dedup


@dataclass(frozen=True)
class JobType(Generic[P]):
    """One pipeline job type, declared once: everything the executor, the daemons and the autoscaler know of it.

    `prepare` fetches the inputs and builds the workload request (blocking; run in a
    thread). `kind` is the artifact kind of the output. `outcome` is published with the
    job's result, in the transaction that completes it. `check` refuses incomplete evidence
    (WorkloadError) before anything is uploaded. `started` is published (retried through a
    store outage) before the workload runs; `progress`, best effort, for the workload's
    progress reports while it runs. `profiles` are the worker profiles whose executors
    claim the type (the autoscaler sizes their pools by them).
    """

    name: str
    payload: type[P]
    prepare: Callable[[Job, P, Parts], Prepared]
    kind: ArtifactKind
    outcome: JobEvent[Finished[P]]
    profiles: frozenset[str]
    check: Callable[[Job, Mapping[str, float]], None] | None = None
    started: JobEvent[Started[P]] | None = None
    progress: JobEvent[Progress] | None = None

    def parse(self, payload: Mapping[str, Any]) -> P:
        """The payload as this type's model; QueueError naming the job type and field if it is malformed."""
        try:
            return self.payload.model_validate(payload)
        except ValidationError as exc:
            fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise QueueError(f"malformed {self.name} job payload: {fields}") from None

    def events(self) -> tuple[str, ...]:
        """Every event type this job type publishes: its outcome, and when it has them, started and progress."""
        hooks: tuple[JobEvent[Any] | None, ...] = (self.started, self.progress, self.outcome)
        return tuple(event.type for event in hooks if event is not None)


# --- selfplay ------------------------------------------------------------------------------


def _prepare_selfplay(job: Job, payload: SelfplayJob, parts: Parts) -> Prepared:
    production = parts.models.production(job.config_key)  # None before the first promotion
    model = parts.artifacts.fetch(production.artifact_sha256) if production else None
    output = parts.workdir / "games.npz"
    return Prepared("selfplay", SelfplayRequest(job.config_key, output, payload.games, model, seed=job.id), output)


def _played(done: Finished[SelfplayJob]) -> dict[str, Any]:
    games = int(done.counts.get("games", done.counts.get("num_games", 0)))
    return {"artifact_sha256": done.sha256, "games": games, "samples": done.samples}


# --- export --------------------------------------------------------------------------------


def _prepare_export(job: Job, payload: ExportJob, parts: Parts) -> Prepared:
    inputs = tuple(parts.artifacts.fetch(sha) for sha in payload.inputs)
    output = parts.workdir / "window.npz"
    request = ExportRequest(job.config_key, inputs, output, payload.window_samples, payload.seed)
    return Prepared("export", request, output)


def _exported(done: Finished[ExportJob]) -> dict[str, Any]:
    return {"window_sha256": done.sha256, "samples": done.samples}


# --- train ---------------------------------------------------------------------------------


def _prepare_train(job: Job, payload: TrainJob, parts: Parts) -> Prepared:
    window = parts.artifacts.fetch(payload.window_sha256)
    init = parts.artifacts.fetch(payload.init_model_sha256) if payload.init_model_sha256 else None
    output = parts.workdir / "model.pt"
    request = TrainRequest(job.config_key, window, output, init, rows=payload.rows, seed=payload.seed)
    return Prepared("train", request, output)


def _training_started(started: Started[TrainJob]) -> dict[str, Any]:
    return {"iteration": started.payload.iteration, "node": started.node}


def _training_progress(progress: Progress) -> dict[str, Any]:
    report = progress.report
    parts = {
        name: report[name] for name in ("total_steps", "policy_loss", "value_loss") if report.get(name) is not None
    }
    return {"step": report["step"], "loss": report["loss"], "samples_per_s": report["samples_per_s"], **parts}


def _trained(done: Finished[TrainJob]) -> dict[str, Any]:
    return {
        "model_id": model_id_for(done.job.config_key, done.payload.iteration, done.sha256),
        "artifact_sha256": done.sha256,
        "loss": float(done.counts.get("loss", math.nan)),
        "samples": done.samples,
    }


# --- evaluate ------------------------------------------------------------------------------


def _prepare_evaluate(job: Job, payload: EvaluateJob, parts: Parts) -> Prepared:
    candidate = Player.of_model(parts.artifacts.fetch(payload.model_sha256))
    if payload.opponent_kind == "model":
        if payload.opponent_sha256 is None:
            raise QueueError(f"evaluate job {job.id} names a model opponent without its sha256")
        opponent = Player.of_model(parts.artifacts.fetch(payload.opponent_sha256))
    else:
        opponent = Player.baseline(payload.opponent)
    output = parts.workdir / "match.json"
    # The job id, not the payload's seed, seeds the match: two evaluations of the same pair then play
    # different openings, while a retried job replays its own.
    request = EvaluateRequest(job.config_key, candidate, opponent, output, payload.games, seed=job.id)
    return Prepared("evaluate", request, output)


def _check_match(job: Job, counts: Mapping[str, float]) -> None:
    """WorkloadError unless the match result counts wins, draws and losses."""
    missing = [key for key in ("wins", "draws", "losses") if key not in counts]
    if missing:
        raise WorkloadError(f"match result of job {job.id} lacks {', '.join(missing)}")


def _evaluated(done: Finished[EvaluateJob]) -> dict[str, Any]:
    """The pair, wins, draws, losses and the Elo difference with its half-interval (Elo points)."""
    _check_match(done.job, done.counts)
    counts = done.counts
    wins, draws, losses = (int(counts[key]) for key in ("wins", "draws", "losses"))
    estimate = elo_estimate(wins, draws, losses, done.elo_confidence)
    low = float(counts.get("elo_low", estimate.low))
    high = float(counts.get("elo_high", estimate.high))
    return {
        "model_id": done.payload.model_id,
        "opponent": done.payload.opponent,
        "wins": wins,
        "draws": draws,
        "losses": losses,
        "elo_diff": float(counts.get("elo", estimate.elo)),
        "elo_ci": (high - low) / 2 if math.isfinite(high - low) else 1000.0,
    }


# --- distill -------------------------------------------------------------------------------


def _prepare_distill(job: Job, payload: DistillJob, parts: Parts) -> Prepared:
    teacher = parts.artifacts.fetch(payload.teacher_sha256)
    window = parts.artifacts.fetch(payload.window_sha256)
    output = parts.workdir / "student.pt"
    request = DistillRequest(
        job.config_key,
        teacher,
        window,
        output,
        payload.blocks,
        payload.channels,
        payload.steps,
        payload.value_mix,
        seed=payload.seed,
    )
    return Prepared(DISTILL, request, output)


def _distilled(done: Finished[DistillJob]) -> dict[str, Any]:
    return {
        "model_id": model_id_for(done.job.config_key, done.payload.iteration, done.sha256),
        "artifact_sha256": done.sha256,
        "teacher_id": done.payload.teacher_id,
        "loss": float(done.counts.get("loss", math.nan)),
        "samples": done.samples,
        "parameters": int(done.counts.get("parameters", 0)),
        "teacher_parameters": int(done.counts.get("teacher_parameters", 0)),
    }


# --- the table -----------------------------------------------------------------------------

_EVERY_WORKER = frozenset({"training_node", "ephemeral", "selfplay"})
_GENERAL_WORKERS = frozenset({"training_node", "ephemeral"})

TYPES: dict[str, JobType[Any]] = {
    job_type.name: job_type
    for job_type in (
        JobType(
            SELFPLAY,
            SelfplayJob,
            _prepare_selfplay,
            ArtifactKind.GAME_BATCH,
            JobEvent("SELFPLAY_COMPLETE", _played),
            _EVERY_WORKER,
        ),
        JobType(
            EXPORT,
            ExportJob,
            _prepare_export,
            ArtifactKind.TRAINING_WINDOW,
            JobEvent("NPZ_EXPORT_COMPLETE", _exported),
            _GENERAL_WORKERS,
        ),
        JobType(
            TRAIN,
            TrainJob,
            _prepare_train,
            ArtifactKind.MODEL,
            JobEvent("TRAINING_COMPLETED", _trained),
            _GENERAL_WORKERS,
            started=JobEvent("TRAINING_STARTED", _training_started, dedup="training-started:{job_id}:{attempt}"),
            progress=JobEvent("TRAINING_PROGRESS", _training_progress, dedup=None),
        ),
        JobType(
            EVALUATE,
            EvaluateJob,
            _prepare_evaluate,
            ArtifactKind.MATCH_RESULT,
            JobEvent("EVALUATION_RESULT", _evaluated),
            _GENERAL_WORKERS,
            check=_check_match,  # an incomplete result is refused before it is uploaded
        ),
        JobType(
            DISTILL,
            DistillJob,
            _prepare_distill,
            ArtifactKind.MODEL,
            JobEvent("DISTILLATION_COMPLETED", _distilled),
            _GENERAL_WORKERS,
        ),
    )
}

JOB_TYPES = tuple(TYPES)


def lookup(job_type: str) -> JobType[Any]:
    """The declaration of `job_type`; QueueError listing the known types if there is none."""
    found = TYPES.get(job_type)
    if found is None:
        raise QueueError(f"unknown pipeline job type {job_type!r}; known: {', '.join(JOB_TYPES)}")
    return found


def types_for(profile: str) -> tuple[str, ...]:
    """The job types a worker profile's executors claim, in table order."""
    return tuple(name for name, job_type in TYPES.items() if profile in job_type.profiles)


def profile_job_types(profile: str) -> frozenset[str] | None:
    """The job types a pool of `profile` serves, for the autoscaler; None for a profile that runs no executor."""
    return frozenset(types_for(profile)) or None
