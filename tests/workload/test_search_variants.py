"""Gumbel root search, tree reuse and playout-cap randomisation."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.workload.test_mcts import BLOCK, WIN, uniform_leaves
from tests.workload.test_nplayer import BLOCK as BLOCK_3P
from tests.workload.test_nplayer import GAME as TOY
from tests.workload.test_nplayer import WIN_LAST_SEAT
from tests.workload.test_nplayer import uniform_leaves as toy_leaves
from zeroloop.config import WorkloadSettings
from zeroloop.errors import WorkloadError
from zeroloop.workload.alphazero import AlphaZeroWorkload
from zeroloop.workload.datafiles import load_game_batch
from zeroloop.workload.games import Game, State
from zeroloop.workload.gumbel import GumbelConfig
from zeroloop.workload.match import carried_tree, search_chooser
from zeroloop.workload.mcts import BatchedMCTS, SearchConfig, SearchResult
from zeroloop.workload.protocol import EvaluateRequest, Player, SelfplayRequest

GUMBEL = GumbelConfig(considered=16)


@pytest.fixture
def connect_four() -> Game:
    return Game("connect_four_2p")


@pytest.mark.parametrize("explore", [False, True])
def test_gumbel_root_takes_the_win_and_blocks(connect_four: Game, explore: bool) -> None:
    mcts = BatchedMCTS(connect_four, uniform_leaves(connect_four), SearchConfig(200, 1.5, gumbel=GUMBEL), rng(0))
    result = mcts.run([connect_four.state_after(WIN), connect_four.state_after(BLOCK)], explore=explore)
    assert result.action.tolist() == [3, 3]
    assert result.visits.sum(axis=1).tolist() == [200.0, 200.0]
    # The improved policy is a distribution over legal moves that already prefers the tactic.
    np.testing.assert_allclose(result.policy.sum(axis=1), 1.0, rtol=1e-5)
    assert result.policy.argmax(axis=1).tolist() == [3, 3]


@pytest.mark.parametrize(("state", "move"), [(BLOCK_3P, 6), (WIN_LAST_SEAT, 10)])
def test_gumbel_root_in_a_three_player_game(state: object, move: int) -> None:
    mcts = BatchedMCTS(TOY, toy_leaves, SearchConfig(200, 1.5, gumbel=GUMBEL), rng(0))
    assert int(mcts.run([state]).action[0]) == move


def test_sequential_halving_shares_visits_phase_by_phase() -> None:
    # 4 actions considered with 16 simulations: two phases of 8 visits; 4 x 2, then the best 2 x 4.
    game = Game("tic_tac_toe_2p")
    config = SearchConfig(16, 1.5, gumbel=GumbelConfig(considered=4))
    result = BatchedMCTS(game, uniform_leaves(game), config, rng(0)).run([game.new_state()], explore=True)
    counts = sorted(result.visits[0].tolist(), reverse=True)
    assert counts == [6.0, 6.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert result.visits[0, int(result.action[0])] == 6.0


def test_gumbel_noise_varies_the_considered_moves_without_noise_it_is_fixed() -> None:
    game = Game("tic_tac_toe_2p")
    config = SearchConfig(8, 1.5, gumbel=GumbelConfig(considered=2))
    mcts = BatchedMCTS(game, uniform_leaves(game), config, rng(0))
    quiet = {tuple(mcts.run([game.new_state()]).visits[0].nonzero()[0]) for _ in range(5)}
    noisy = {tuple(mcts.run([game.new_state()], explore=True).visits[0].nonzero()[0]) for _ in range(5)}
    assert len(quiet) == 1
    assert len(noisy) > 1


def test_advanced_tree_keeps_the_subtree_and_continues_it(connect_four: Game) -> None:
    mcts = BatchedMCTS(connect_four, uniform_leaves(connect_four), SearchConfig(200, 1.5), rng(0))
    root = connect_four.state_after([3])
    first = mcts.run([root])
    action = int(first.action[0])
    kept = first.trees[0].advance(action)
    assert kept is not None
    carried = float(first.visits[0, action]) - 1.0  # the visit that expanded the child is not below it
    assert kept.visits[0].sum() == carried > 0
    assert str(kept.states[0]) == str(connect_four.child(root, action))
    before = mcts.evaluations
    second = mcts.run([kept.states[0]], reuse=[kept])
    assert second.visits[0].sum() == carried + 200
    assert mcts.evaluations - before <= 200
    # A child never reached has nothing to carry.
    unexpanded = mcts.run([root], simulations=[1]).trees[0]
    assert unexpanded.advance(int(np.flatnonzero(unexpanded.visits[0] == 0)[0])) is None


def test_advanced_tree_plays_on_like_a_fresh_one_in_the_same_position(connect_four: Game) -> None:
    # The carried tree is consistent: its terminal wins are still found from the new root.
    mcts = BatchedMCTS(connect_four, uniform_leaves(connect_four), SearchConfig(300, 1.5), rng(0))
    before_win = connect_four.state_after(WIN[:-1])
    first = mcts.run([before_win])
    kept = first.trees[0].advance(WIN[-1])
    if kept is None:
        pytest.skip("the search never expanded the move played")  # pragma: no cover - not with this seed
    result = mcts.run([connect_four.state_after(WIN)], reuse=[kept])
    assert int(result.action[0]) == 3


@pytest.mark.parametrize("gumbel", [False, True])
def test_playout_cap_records_only_full_searches(tiny_settings: WorkloadSettings, tmp_path: Path, gumbel: bool) -> None:
    capped = tiny_settings.model_copy(
        update={"full_search_share": 0.25, "fast_simulations": 2, "gumbel": gumbel, "tree_reuse": True}
    )
    full = tiny_settings.model_copy(update={"gumbel": gumbel})
    evidence = {}
    batches = {}
    for name, settings in (("capped", capped), ("full", full)):
        path = tmp_path / f"{name}.npz"
        evidence[name] = AlphaZeroWorkload(settings).selfplay(SelfplayRequest("tic_tac_toe_2p", path, 8, seed=4))
        batches[name] = load_game_batch(path)
    capped_batch = batches["capped"]
    assert int(capped_batch["game_lengths"].sum()) == capped_batch["obs"].shape[0]
    assert capped_batch["obs"].shape[0] < capped_batch["game_moves"].sum()
    np.testing.assert_array_equal(batches["full"]["game_lengths"], batches["full"]["game_moves"])
    assert evidence["capped"].counts["evaluations"] < evidence["full"].counts["evaluations"]
    np.testing.assert_allclose(capped_batch["policy"].sum(axis=1), 1.0, rtol=1e-5)


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_match_player_with_reuse_continues_its_tree_after_the_opponents_move(connect_four: Game) -> None:
    mcts = BatchedMCTS(connect_four, uniform_leaves(connect_four), SearchConfig(100, 1.5), rng(0))
    carried: list[float] = []
    real_run = mcts.run

    def spy(states: Sequence[State], **kwargs: Any) -> SearchResult:
        trees = kwargs.get("reuse") or [None] * len(states)
        carried.extend(float(t.visits[0].sum()) if t is not None else 0.0 for t in trees)
        return real_run(states, **kwargs)

    mcts.run = spy  # type: ignore[method-assign]
    choose = search_chooser(mcts, rng(0), reuse=True)
    state = connect_four.new_state()
    (ours,) = choose([state], [False])
    connect_four.apply(state, ours)
    connect_four.apply(state, 3 if ours != 3 else 2)  # the opponent's reply
    choose([state], [False])
    assert carried[0] == 0.0
    assert carried[1] > 0.0  # the second search started from what the first one had below these two moves
    # Without reuse nothing is carried.
    plain = search_chooser(mcts, rng(0), reuse=False)
    plain([state], [False])
    assert carried[2] == 0.0


def test_match_with_tree_reuse_and_gumbel_plays_legal_games(tiny_settings: WorkloadSettings, tmp_path: Path) -> None:
    settings = tiny_settings.model_copy(update={"tree_reuse": True, "gumbel": True})
    output = tmp_path / "m.json"
    AlphaZeroWorkload(settings).evaluate(
        EvaluateRequest("connect_four_2p", Player("mcts"), Player("random"), output, games=4, seed=1)
    )
    result = json.loads(output.read_text())
    assert result["games"] == 4 and result["wins"] + result["draws"] + result["losses"] == 4


def test_a_search_without_simulations_is_refused(connect_four: Game) -> None:
    mcts = BatchedMCTS(connect_four, uniform_leaves(connect_four), SearchConfig(8, 1.5), rng(0))
    with pytest.raises(WorkloadError, match="at least one simulation"):
        mcts.run([connect_four.new_state(), connect_four.new_state()], simulations=[8, 0])


def test_kept_tree_is_found_whoever_moved_since(connect_four: Game) -> None:
    mcts = BatchedMCTS(connect_four, uniform_leaves(connect_four), SearchConfig(200, 1.5), rng(0))
    root = connect_four.new_state()
    tree = mcts.run([root]).trees[0]
    action = int(np.argmax(tree.visits[0]))
    reply = int(np.argmax(tree.advance(action).visits[0]))  # type: ignore[union-attr]
    # Kept right after our move: found as it is when we move again at once ...
    kept = {(action,): tree.advance(action)}
    found = carried_tree(kept, (action,))  # type: ignore[arg-type]
    assert found is not None and not kept
    # ... and walked down one move when an opponent moved in between.
    kept = {(action,): tree.advance(action)}
    walked = carried_tree(kept, (action, reply))  # type: ignore[arg-type]
    assert walked is not None and walked.visits[0].sum() > 0
    assert carried_tree({}, (action, reply)) is None
