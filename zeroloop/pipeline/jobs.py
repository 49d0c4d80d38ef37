"""The payloads and results of the four pipeline job types, declared once.

The coordinator enqueues these, workers run them; both sides parse them with the same
models so a malformed job fails loudly at the worker with the field named.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from zeroloop.errors import QueueError

SELFPLAY, EXPORT, TRAIN, EVALUATE = "selfplay", "export", "train", "evaluate"
JOB_TYPES = (SELFPLAY, EXPORT, TRAIN, EVALUATE)


class _Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SelfplayJob(_Payload):
    """Play `games` games with the config's production model at the time the job starts."""

    games: int = Field(ge=1)
    seed: int = 0


class ExportJob(_Payload):
    """Build training window `iteration` from these game batches (sha256s, oldest first)."""

    iteration: int = Field(ge=0)
    inputs: list[str] = Field(min_length=1)
    window_samples: int = Field(ge=1)
    seed: int = 0


class TrainJob(_Payload):
    """Train candidate `iteration` on a window, starting from the production model if there is one."""

    iteration: int = Field(ge=0)
    window_sha256: str
    init_model_id: str | None = None
    init_model_sha256: str | None = None
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
    opponent_kind: Literal["model", "random", "mcts"]
    opponent_sha256: str | None = None
    games: int = Field(ge=1)
    seed: int = 0
    purpose: Literal["gate", "tournament"] = "gate"


PAYLOADS: dict[str, type[_Payload]] = {
    SELFPLAY: SelfplayJob,
    EXPORT: ExportJob,
    TRAIN: TrainJob,
    EVALUATE: EvaluateJob,
}


def parse(job_type: str, payload: dict[str, Any]) -> _Payload:
    """The payload of a job as its model; QueueError naming the job type and field if it is malformed."""
    model = PAYLOADS.get(job_type)
    if model is None:
        raise QueueError(f"unknown pipeline job type {job_type!r}; known: {', '.join(JOB_TYPES)}")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise QueueError(f"malformed {job_type} job payload: {fields}") from None
