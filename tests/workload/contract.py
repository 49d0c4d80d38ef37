"""The workload contract: what every workload (built in or one's own) promises the pipeline.

Subclass `WorkloadContract` in a test module and provide two fixtures, `workload` (the
workload under test) and `config_key` (a key it plays); pytest then runs every check
below against it. zeroloop runs it against the built-in AlphaZero and the command
adapter (tests/workload/test_contract.py); docs/workload.md shows how to run it against
a workload of one's own.

The promises: each operation writes exactly its one output (no temporary file left
beside it) and returns Evidence naming it with its kind, size and sha256, and the counts
the pipeline reads (a game batch's games, a match's wins, draws and losses, which add up
to its games); the four operations chain (selfplay -> export -> train -> evaluate); a
missing input is a WorkloadError, never a bare exception.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from zeroloop.errors import WorkloadError
from zeroloop.workload.protocol import (
    EvaluateRequest,
    Evidence,
    ExportRequest,
    FileKind,
    Player,
    SelfplayRequest,
    TrainRequest,
    file_sha256,
)


def _only_output(evidence: Evidence, output: Path, kind: FileKind) -> None:
    assert [item.path for item in evidence.outputs] == [output]
    (found,) = evidence.outputs
    assert found.kind is kind
    assert found.size_bytes == output.stat().st_size > 0
    assert found.sha256 == file_sha256(output)
    assert sorted(path.name for path in output.parent.iterdir() if path.name.startswith(output.stem)) == [output.name]


class WorkloadContract:
    """Checks every workload passes; the subclass provides the `workload` and `config_key` fixtures."""

    def test_the_four_operations_chain_each_with_its_evidence(
        self, workload: Any, config_key: str, tmp_path: Path
    ) -> None:
        batch_dir, window_dir, model_dir, match_dir = (tmp_path / name for name in ("b", "w", "m", "r"))
        for folder in (batch_dir, window_dir, model_dir, match_dir):
            folder.mkdir()
        batch = batch_dir / "games.npz"
        played = workload.selfplay(SelfplayRequest(config_key, batch, games=2, seed=1))
        _only_output(played, batch, FileKind.GAME_BATCH)
        assert played.operation == "selfplay" and played.config_key == config_key

        window = window_dir / "window.npz"
        exported = workload.export(ExportRequest(config_key, (batch,), window, window_samples=64, seed=1))
        _only_output(exported, window, FileKind.TRAINING_WINDOW)

        model = model_dir / "model.pt"
        trained = workload.train(TrainRequest(config_key, window, model, seed=1))
        _only_output(trained, model, FileKind.MODEL)

        match = match_dir / "match.json"
        games = 4
        rated = workload.evaluate(EvaluateRequest(config_key, Player.of_model(model), Player("random"), match, games))
        _only_output(rated, match, FileKind.MATCH_RESULT)
        outcomes = [rated.counts[key] for key in ("wins", "draws", "losses")]
        assert all(count >= 0 for count in outcomes) and sum(outcomes) > 0

    def test_a_missing_input_is_a_workload_error(self, workload: Any, config_key: str, tmp_path: Path) -> None:
        absent = tmp_path / "absent.npz"
        with pytest.raises(WorkloadError):
            workload.export(ExportRequest(config_key, (absent,), tmp_path / "window.npz", window_samples=8))
        with pytest.raises(WorkloadError):
            workload.train(TrainRequest(config_key, absent, tmp_path / "model.pt"))
