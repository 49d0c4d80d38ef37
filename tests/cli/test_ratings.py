"""Ratings as screens show them: one number per model, an honest interval, "not rated" until a match rates it."""

from __future__ import annotations

import math
from pathlib import Path

from rich.console import Console

from zeroloop.app import App
from zeroloop.artifacts.transfer import ArtifactKind
from zeroloop.cli.quickstart import last_results, render, snapshot, steps_note, unrated_note
from zeroloop.events.bus import Event
from zeroloop.pipeline.progress import ProgressRecorder
from zeroloop.pipeline.ratings import Rating, baseline_ratings, match_difference, ratings, signed
from zeroloop.store.queries import pipelines as pipeline_queries

KEY = "tic_tac_toe_2p"


def _candidate(app: App, sha: str, iteration: int, parent: str | None) -> str:
    model = app.models.register_candidate(
        config_key=KEY, artifact_sha256=sha * 64, parent_id=parent, window_sha256=None, job_ids=[], iteration=iteration
    )
    return model.id


def _match(app: App, model_id: str, opponent: str, wins: int, draws: int, losses: int) -> None:
    app.models.record_match(
        config_key=KEY, model_id=model_id, opponent=opponent, wins=wins, draws=draws, losses=losses,
        elo_diff=636.0, elo_ci=981.0, job_id=None,
    )  # fmt: skip


def _rated(app: App, *ids: str) -> dict[str, Rating]:
    with app.store.read() as conn:
        return dict(ratings(conn, ids, 0.95))


def test_a_model_reads_as_its_joint_rating_with_an_interval_relative_to_random_play(app: App) -> None:
    first = _candidate(app, "a", 1, None)
    assert str(_rated(app, first)[first]) == "not rated"
    _match(app, first, "mcts", 5, 0, 5)  # no chain of matches to random play: nothing to place it by
    assert str(_rated(app, first)[first]) == "not rated"
    _match(app, first, "random", 20, 0, 0)
    second = _candidate(app, "b", 2, first)
    rated = _rated(app, first, second)
    # The child starts with its parent's number in the registry, but no match has rated it.
    assert app.models.get(second).elo == app.models.get(first).elo
    assert str(rated[second]) == "not rated" and rated[second].describe() == "not rated"
    diff, _half = match_difference(20, 0, 0, 0.95)
    assert rated[first].elo == app.models.get(first).elo
    assert math.isclose(rated[first].elo or math.nan, diff, abs_tol=1e-6)  # one match to random: its own number
    assert 0 < rated[first].half_width < diff  # a 20-0 sweep: clearly stronger than random, and no "±981"
    assert (rated[first].games, rated[first].opponents) == (30, 2)
    _match(app, second, first, 10, 4, 6)
    child = _rated(app, second)[second]
    assert child.rated and child.half_width > rated[first].half_width  # further from the anchor: less sure
    assert "random play = 0" in child.describe()
    # The joint fit moves the parent too once its child's results are in.
    _match(app, second, "random", 20, 0, 0)
    assert _rated(app, first)[first].elo != rated[first].elo
    # The MCTS baseline is rated in the same fit (it has no row of its own: the pipeline's record holds it).
    with app.store.transaction() as conn:
        pipeline_queries.ensure_pipeline(conn, KEY, 1.0)
    _match(app, second, "mcts", 6, 2, 2)
    with app.store.read() as conn:
        mcts = baseline_ratings(conn, KEY, 0.95)["mcts"]
    assert mcts.rated and mcts.elo is not None and mcts.elo < (_rated(app, second)[second].elo or 0.0)


def test_intervals_shrink_with_games_and_differences_never_read_minus_zero() -> None:
    assert match_difference(40, 0, 0, 0.95)[1] < match_difference(10, 0, 0, 0.95)[1]
    assert match_difference(10, 0, 10, 0.95)[0] == 0.0
    assert signed(-0.3) == "+0" and signed(-12.6) == "-13" and signed(4.4) == "+4"


def _event(event_id: int, event_type: str, payload: dict[str, object]) -> Event:
    return Event(event_id, event_type, {"config_key": KEY, **payload}, "test", "n1", 100.0 + event_id)


def test_the_panel_shows_the_final_training_step_and_one_rating(app: App, tmp_path: Path) -> None:
    with app.store.transaction() as conn:
        pipeline_queries.ensure_pipeline(conn, KEY, 1.0)
    model_file = tmp_path / "model.pt"
    model_file.write_bytes(b"weights")
    artifact = app.artifacts.put(model_file, ArtifactKind.MODEL, config_key=KEY, meta={"steps": 300})
    recorder = ProgressRecorder(app.store)
    recorder.handle(_event(1, "TRAINING_STARTED", {"job_id": 7, "iteration": 1, "node": "n1"}))
    recorder.handle(_event(2, "TRAINING_PROGRESS", {"job_id": 7, "step": 280, "loss": 1.5, "samples_per_s": 900.0}))
    done = {"job_id": 7, "model_id": "m", "artifact_sha256": artifact.sha256, "loss": 1.25, "samples": 3000}
    recorder.handle(_event(3, "TRAINING_COMPLETED", done))
    recorder.handle(_event(4, "TRAINING_PROGRESS", {"job_id": 7, "step": 280, "loss": 1.5, "samples_per_s": 900.0}))
    model = _candidate(app, "c", 1, None)
    result = {"model_id": model, "opponent": "random", "wins": 3, "draws": 1, "losses": 0, "games": 4}
    recorder.handle(_event(5, "EVALUATION_RESULT", {**result, "elo_diff": 636.0, "elo_ci": 981.0}))
    console = Console(record=True, width=160)
    console.print(render(snapshot(app, KEY), KEY, 60.0, 10.0, (2, 0)))
    text = console.export_text()
    assert "last run done after 300 steps, loss 1.250" in text and "280" not in text
    assert f"{model}, not rated" in text  # its match was reported, but not recorded in the registry
    assert "636" not in text and "981" not in text
    _match(app, model, "random", 3, 1, 0)
    console.print(render(snapshot(app, KEY), KEY, 60.0, 10.0, (2, 0)))
    rating = _rated(app, model)[model]
    assert f"{model}, Elo {rating} (random play = 0, 95% interval)" in console.export_text()


def test_the_panel_says_how_far_the_first_training_is_and_where_a_runs_steps_come_from(app: App) -> None:
    """For minutes the panel showed a growing sample count and "0 trained" with no hint; a run stopped at 300
    steps while `zeroloop config` said train_steps = 1000, without a word."""
    with app.store.transaction() as conn:
        pipeline_queries.ensure_pipeline(conn, KEY, 1.0)
        pipeline_queries.update_pipeline(conn, KEY, 2.0, samples_total=1166, samples_since_training=1166)
    needed = app.settings.pipeline.train_after_samples
    console = Console(record=True, width=160)
    console.print(render(snapshot(app, KEY), KEY, 60.0, 10.0, (2, 0)))
    share = f"{100 * 1166 / needed:.0f}%"
    assert f"1166 (1166 of the {needed} the first training needs, {share})" in console.export_text()

    ProgressRecorder(app.store).handle(
        _event(
            1, "TRAINING_PROGRESS", {"job_id": 7, "step": 120, "total_steps": 300, "loss": 1.5, "samples_per_s": 9.0}
        )
    )
    console = Console(record=True, width=160)
    console.print(render(snapshot(app, KEY), KEY, 60.0, 10.0, (2, 0)))
    text = console.export_text()
    preset = app.settings.workload.overrides[KEY]["train_steps"]
    assert "step 120 of 300" in text
    assert f"{preset:g} steps a run: {KEY}'s preset in workload.overrides" in text
    assert preset != app.settings.workload.train_steps  # the case the note is for


def test_the_steps_note_stays_away_when_a_run_takes_the_configured_steps(app: App) -> None:
    app.settings.workload.train_steps = app.settings.workload.overrides[KEY]["train_steps"]
    assert steps_note(app.settings, KEY) is None
    app.settings.workload.overrides = {}
    assert steps_note(app.settings, KEY) is None
    app.settings.pipeline.train_samples_per_sample = 18
    assert "18 training rows per new sample" in (steps_note(app.settings, KEY) or "")


def test_the_steps_note_names_a_config_keys_own_rows_per_sample(app: App) -> None:
    assert steps_note(app.settings, "connect_four_2p") == (
        "steps a run: 18 training rows per new sample / the batch size (connect_four_2p's preset in pipeline.overrides)"
    )


def test_the_last_candidates_results_list_the_baselines_weakest_first_then_production() -> None:
    result = {"model_id": "m", "wins": 1, "draws": 0, "losses": 0}
    progress = {f"last_vs_{name}": result for name in ("best", "mctsbot-1000", "mcts", "random", "mctsbot-30")}
    assert list(last_results({**progress, "promotions": 3})) == ["random", "mcts", "mctsbot-30", "mctsbot-1000", "best"]


def test_an_unrated_production_model_of_an_ungated_key_says_what_will_rate_it(app: App) -> None:
    assert unrated_note(app.settings, KEY) is None  # gated: its round's matches rate it
    assert unrated_note(app.settings, "connect_four_2p") == (
        "promoted without matches: the next tournament rates it (every 30 min)"
    )
    app.settings.evaluation.tournament_interval_s = 0
    assert "tournaments are off" in (unrated_note(app.settings, "connect_four_2p") or "")
