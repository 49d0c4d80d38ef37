"""A variant key plays its base key's game with the settings its model file carries, and passes them on."""

from __future__ import annotations

from pathlib import Path

import pytest

from zeroloop.config import WorkloadSettings
from zeroloop.errors import WorkloadError
from zeroloop.workload.alphazero import AlphaZeroWorkload
from zeroloop.workload.keys import base_key, is_variant
from zeroloop.workload.members import member_settings, write_member
from zeroloop.workload.params import AlphaZeroParams
from zeroloop.workload.protocol import EvaluateRequest, ExportRequest, Player, SelfplayRequest, TrainRequest

VARIANT = "tic_tac_toe_2p~t1v1"
TINY = WorkloadSettings(
    torch_threads=1, inference_precision="float32", blocks=1, channels=8, value_hidden=8, simulations=8,
    parallel_games=8, train_batch_size=32, train_steps=5, checkpoint_every_steps=5, progress_every_steps=5,
    eval_simulations=4, eval_parallel_games=4,
)  # fmt: skip


def test_variant_keys_name_their_base_key() -> None:
    assert base_key(VARIANT) == "tic_tac_toe_2p" and base_key("tic_tac_toe_2p") == "tic_tac_toe_2p"
    assert is_variant(VARIANT) and not is_variant("tic_tac_toe_2p")


def test_a_variant_takes_its_base_keys_overrides_then_its_own_then_its_models() -> None:
    settings = TINY.model_copy(update={"overrides": {"tic_tac_toe_2p": {"simulations": 20, "train_steps": 9}}})
    params = AlphaZeroParams.resolve(settings, VARIANT, {"simulations": 5})
    assert (params.simulations, params.train_steps, params.blocks) == (5, 9, 1)  # blocks: TINY's, not the preset's
    with pytest.raises(WorkloadError, match="the tuned settings of tic_tac_toe_2p~t1v1's model names unknown"):
        AlphaZeroParams.resolve(settings, VARIANT, {"simulation": 5})


def test_selfplay_searches_with_the_model_files_settings_and_training_passes_them_on(tmp_path: Path) -> None:
    workload = AlphaZeroWorkload(TINY)
    few, many = tmp_path / "few.pt", tmp_path / "many.pt"
    write_member(TINY, VARIANT, few, {"simulations": 2}, seed=3)
    write_member(TINY, VARIANT, many, {"simulations": 24}, seed=3)
    evaluations = {}
    for name, model in (("few", few), ("many", many)):
        out = tmp_path / f"{name}.npz"
        evidence = workload.selfplay(SelfplayRequest(VARIANT, out, games=4, model=model, seed=1))
        evaluations[name] = evidence.counts["evaluations"] / evidence.counts["positions"]
    assert evaluations["few"] <= 3 < 12 <= evaluations["many"]  # per move: about 2 against about 24

    window = tmp_path / "window.npz"
    workload.export(ExportRequest(VARIANT, (tmp_path / "few.npz",), window, 500))
    trained = tmp_path / "trained.pt"
    workload.train(TrainRequest(VARIANT, window, trained, init_model=few, seed=0))
    assert member_settings(trained) == {"simulations": 2}  # the candidate keeps its lineage's settings


def test_models_of_two_variants_meet_under_the_population_key_but_another_game_is_refused(tmp_path: Path) -> None:
    workload = AlphaZeroWorkload(TINY)
    first, second = tmp_path / "a.pt", tmp_path / "b.pt"
    write_member(TINY, "tic_tac_toe_2p~t1v1", first, {"channels": 8}, seed=1)
    write_member(TINY, "tic_tac_toe_2p~t1v2", second, {"channels": 16}, seed=2)
    request = EvaluateRequest(
        "tic_tac_toe_2p~t1", Player.of_model(first), Player.of_model(second), tmp_path / "m.json", 4
    )
    evidence = workload.evaluate(request)
    assert evidence.counts["wins"] + evidence.counts["draws"] + evidence.counts["losses"] == evidence.counts["games"]
    other = tmp_path / "c4.pt"
    write_member(TINY, "connect_four_2p~t1v1", other, {}, seed=1)
    with pytest.raises(WorkloadError, match="is for 'connect_four_2p~t1v1', not 'tic_tac_toe_2p~t1'"):
        workload.evaluate(
            EvaluateRequest("tic_tac_toe_2p~t1", Player.of_model(first), Player.of_model(other), tmp_path / "x.json", 2)
        )


def test_a_copy_keeps_its_weights_shape_and_refuses_another(tmp_path: Path) -> None:
    source = tmp_path / "source.pt"
    # blocks: tic-tac-toe's own preset (2) under the variant, channels: the variant's
    assert write_member(TINY, VARIANT, source, {"channels": 16}, seed=1) == {"blocks": 2, "channels": 16}
    copy = tmp_path / "copy.pt"
    shape = write_member(TINY, VARIANT, copy, {"channels": 16, "simulations": 3}, source=source)
    assert shape == {"blocks": 2, "channels": 16}
    assert member_settings(copy) == {"channels": 16, "simulations": 3}
    with pytest.raises(WorkloadError, match="a copy keeps its shape, not channels = 32"):
        write_member(TINY, VARIANT, tmp_path / "bad.pt", {"channels": 32}, source=source)
