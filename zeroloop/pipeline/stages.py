"""The stage machine of one config key's pipeline, with its one transition function.

    SELFPLAY --enough new samples--> EXPORT --window built--> TRAINING
        ^                                                        |
        |                                              candidate trained
        |                                                        v
        +------promoted or rejected------ PROMOTION <--all results-- EVALUATION

Selfplay never stops: SELFPLAY only means no export/train/evaluate round is in flight.
A failed export, training or evaluation returns the pipeline to SELFPLAY so the loop
goes on; that edge is legal from every stage past SELFPLAY.
"""

from __future__ import annotations

from enum import StrEnum

from zeroloop.errors import StageError


class Stage(StrEnum):
    """Where a config key's improvement round stands."""

    SELFPLAY = "selfplay"
    EXPORT = "export"
    TRAINING = "training"
    EVALUATION = "evaluation"
    PROMOTION = "promotion"


_EDGES: dict[Stage, frozenset[Stage]] = {
    # enough new samples since the last training: build a window
    Stage.SELFPLAY: frozenset({Stage.EXPORT}),
    # the window is built: train on it; or the export failed: back to selfplay
    Stage.EXPORT: frozenset({Stage.TRAINING, Stage.SELFPLAY}),
    # a candidate model exists: evaluate it; or training failed
    Stage.TRAINING: frozenset({Stage.EVALUATION, Stage.SELFPLAY}),
    # every match of the candidate is in: decide; or the evaluation failed
    Stage.EVALUATION: frozenset({Stage.PROMOTION, Stage.SELFPLAY}),
    # promoted or rejected: the next round starts from selfplay
    Stage.PROMOTION: frozenset({Stage.SELFPLAY}),
}


def transition(current: Stage | str, target: Stage | str) -> Stage:
    """Return `target` if the machine allows current -> target; raise StageError otherwise."""
    current, target = Stage(current), Stage(target)
    if target not in _EDGES[current]:
        raise StageError(f"pipeline cannot go from {current} to {target}")
    return target
