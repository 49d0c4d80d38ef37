from __future__ import annotations

import pytest

from zeroloop.errors import EventError
from zeroloop.events import catalogue


def test_unknown_event_type_is_refused_by_name() -> None:
    with pytest.raises(EventError, match="SELFPLAY_COMPLETED"):
        catalogue.validate("SELFPLAY_COMPLETED", {})


def test_invalid_payload_names_type_and_field() -> None:
    with pytest.raises(EventError) as raised:
        catalogue.validate("GAME_BATCH_READY", {"config_key": "tic_tac_toe_2p", "artifact_sha256": "ab", "games": -1})
    message = str(raised.value)
    assert "GAME_BATCH_READY" in message
    assert "field games" in message
    assert "field samples" in message


def test_valid_payload_becomes_its_model() -> None:
    model = catalogue.validate("NODE_LOST", {"node": "n1", "silent_s": 61.0})
    assert isinstance(model, catalogue.NodeLost)
    assert model.silent_s == 61.0


def test_payload_model_of_another_type_is_refused() -> None:
    with pytest.raises(EventError, match="NodeLost"):
        catalogue.validate("NODE_REGISTERED", catalogue.NodeLost(node="n1", silent_s=1.0))


def test_seed_event_names_are_declared() -> None:
    for name in (
        "SELFPLAY_COMPLETE",
        "GAME_BATCH_READY",
        "NPZ_EXPORT_COMPLETE",
        "TRAINING_STARTED",
        "TRAINING_PROGRESS",
        "TRAINING_COMPLETED",
        "EVALUATION_RESULT",
        "MODEL_PROMOTED",
    ):
        assert name in catalogue.EVENT_TYPES
