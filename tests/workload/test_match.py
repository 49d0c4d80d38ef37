"""Evaluation matches: varied openings shared by every seat, seats rotated, per-game results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from zeroloop.config import WorkloadSettings
from zeroloop.errors import WorkloadError
from zeroloop.workload.alphazero import AlphaZeroWorkload
from zeroloop.workload.games import Game
from zeroloop.workload.match import random_opening, ranks_of
from zeroloop.workload.protocol import EvaluateRequest, Player


def _match(workload: AlphaZeroWorkload, tmp_path: Path, key: str, games: int, seed: int) -> dict[str, Any]:
    output = tmp_path / f"{key}-{seed}.json"
    workload.evaluate(EvaluateRequest(key, Player("mcts"), Player("random"), output, games=games, seed=seed))
    result: dict[str, Any] = json.loads(output.read_text())
    return result


def _sequence(result: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(r["opening"], r["returns"], r["moves"]) for r in result["game_results"]]


def test_matches_of_the_same_pair_differ_by_seed_and_replay_with_it(
    workload: AlphaZeroWorkload, tmp_path: Path
) -> None:
    first = _match(workload, tmp_path, "tic_tac_toe_2p", 8, seed=101)
    second = _match(workload, tmp_path, "tic_tac_toe_2p", 8, seed=102)
    again = _match(workload, tmp_path, "tic_tac_toe_2p", 8, seed=101)
    assert _sequence(first) != _sequence(second)
    assert _sequence(first) == _sequence(again)
    # Within a match, the four colour pairs open differently.
    openings = [tuple(r["opening"]) for r in first["game_results"]]
    assert len(set(openings)) > 1


def test_both_colours_play_each_opening(workload: AlphaZeroWorkload, tmp_path: Path) -> None:
    result = _match(workload, tmp_path, "tic_tac_toe_2p", 6, seed=7)
    records = result["game_results"]
    assert [r["game"] for r in records] == list(range(6))
    assert [r["candidate_seat"] for r in records] == [0, 1, 0, 1, 0, 1]
    for pair in range(3):
        assert records[2 * pair]["opening"] == records[2 * pair + 1]["opening"]
        assert len(records[2 * pair]["opening"]) == workload.params("tic_tac_toe_2p").eval_opening_moves
    # Two players: one pairwise outcome per game, the old fields unchanged.
    assert result["wins"] + result["draws"] + result["losses"] == result["games"] == 6
    assert result["players"] == 2 and result["seed"] == 7


def test_opening_never_ends_the_game() -> None:
    game = Game("tic_tac_toe_2p")
    for group in range(20):
        opening = random_opening(game, 9, seed=1, group=group)
        assert not game.is_terminal(game.state_after(opening))
        assert len(opening) < 9


def test_ranks_share_ties() -> None:
    assert ranks_of([2.0, -1.0, -1.0]) == [1, 2, 2]
    assert ranks_of([0.0, 0.0]) == [1, 1]
    assert ranks_of([-1.0, 1.0, 0.0]) == [3, 1, 2]


def test_three_player_match_rotates_seats_and_scores_pairwise(tiny_settings: WorkloadSettings, tmp_path: Path) -> None:
    settings = tiny_settings.model_copy(update={"game_params": {"chinese_checkers_3p": {"max_moves": 12}}})
    workload = AlphaZeroWorkload(settings)
    result = _match(workload, tmp_path, "chinese_checkers_3p", 6, seed=3)
    records = result["game_results"]
    assert result["players"] == 3 and result["games"] == 6
    assert [r["candidate_seat"] for r in records] == [0, 1, 2, 0, 1, 2]
    assert records[0]["opening"] == records[1]["opening"] == records[2]["opening"]
    # Each game compares the candidate with both opponent seats.
    assert result["wins"] + result["draws"] + result["losses"] == 2 * 6
    for record in records:
        assert len(record["returns"]) == len(record["ranks"]) == 3
        assert record["ranks"] == ranks_of(record["returns"])


def test_openspiel_mctsbot_plays_as_a_baseline(workload: AlphaZeroWorkload, tmp_path: Path) -> None:
    output = tmp_path / "ladder.json"
    bot = Player.baseline("mctsbot-200")
    workload.evaluate(EvaluateRequest("tic_tac_toe_2p", bot, Player("random"), output, games=20, seed=3))
    result = json.loads(output.read_text())
    assert result["candidate"] == "mctsbot-200"
    games = result["wins"] + result["draws"] + result["losses"]  # the match may stop early, decided (SPRT)
    assert games >= 4 and result["wins"] >= 0.75 * games and result["losses"] <= 1, result  # a real search
    with pytest.raises(WorkloadError, match="names no baseline"):
        Player.baseline("mctsbot-0")


def test_the_openspiel_bot_replays_a_match_with_its_seed(workload: AlphaZeroWorkload, tmp_path: Path) -> None:
    # OpenSpiel's C++ MCTSBot draws its rollouts and ties from the seed it is given: a match replays with its seed.
    def match(seed: int) -> list[tuple[Any, ...]]:
        output = tmp_path / f"bots-{seed}.json"
        request = EvaluateRequest(
            "connect_four_2p", Player.baseline("mctsbot-30"), Player.baseline("mctsbot-10"), output, games=6, seed=seed
        )
        workload.evaluate(request)
        return _sequence(json.loads(output.read_text()))

    first, again, other = match(7), match(7), match(8)
    assert first == again
    assert first != other
