"""The joint Bradley-Terry rating on simulated match results, and the n-player decomposition that feeds it."""

from __future__ import annotations

import random

import pytest

from zeroloop.errors import WorkloadError, ZeroloopError
from zeroloop.pipeline.bradley_terry import Pairing, fit
from zeroloop.workload.elo import (
    Tally,
    add_outcomes,
    elo_from_score,
    pairwise_outcomes,
    score_from_elo,
    scores_from_places,
)

ANCHOR = {"random": 0.0}
TRUE = {"random": 0.0, "m1": 150.0, "m2": 300.0, "m3": 380.0, "m4": 520.0, "m5": 600.0, "mcts": 450.0}


def _game(rng: random.Random, elo: float, draw_share: float) -> tuple[int, int, int]:
    """One game whose expected score is Elo's; draws take `draw_share` of the room the score leaves."""
    p = score_from_elo(elo)
    draw = draw_share * 2.0 * min(p, 1.0 - p)
    roll = rng.random()
    if roll < p - draw / 2.0:
        return 1, 0, 0
    if roll < p + draw / 2.0:
        return 0, 1, 0
    return 0, 0, 1


def _match(rng: random.Random, a: str, b: str, games: int, draw_share: float) -> Pairing:
    wins = draws = losses = 0
    for _ in range(games):
        w, d, lost = _game(rng, TRUE[a] - TRUE[b], draw_share)
        wins, draws, losses = wins + w, draws + d, losses + lost
    return Pairing(a, b, wins, draws, losses)


def _loop_schedule(rng: random.Random, games: int, draw_share: float) -> list[Pairing]:
    """What the loop records: each model against its predecessor, random play and MCTS, plus one round robin."""
    models = ["m1", "m2", "m3", "m4", "m5"]
    pairings = []
    for i, model in enumerate(models):
        pairings.append(_match(rng, model, "random", games, draw_share))
        pairings.append(_match(rng, model, "mcts", games, draw_share))
        if i:
            pairings.append(_match(rng, model, models[i - 1], games, draw_share))
    for i, a in enumerate(models[2:]):
        for b in models[2 + i + 1 :]:
            pairings.append(_match(rng, a, b, games, draw_share))
    return pairings


def test_one_match_rates_as_the_smoothed_score_and_the_anchor_holds() -> None:
    result = fit([Pairing("m1", "random", 9, 0, 1)], ANCHOR)
    assert result.ratings["random"].elo == 0.0 and result.ratings["random"].stderr == 0.0
    assert result.ratings["m1"].elo == pytest.approx(elo_from_score(9.5 / 11), abs=1e-6)
    sweep = fit([Pairing("m1", "random", 40, 0, 0)], ANCHOR).ratings["m1"]
    assert 400 < sweep.elo < 1000 and 0 < sweep.half_width(0.95) < sweep.elo


def test_a_group_no_match_connects_to_an_anchor_is_not_rated() -> None:
    result = fit([Pairing("m1", "random", 5, 0, 5), Pairing("x", "y", 3, 0, 1)], ANCHOR)
    assert set(result.ratings) == {"m1", "random"}
    assert fit([Pairing("x", "y", 3, 0, 1)], ANCHOR).ratings == {}


def test_the_order_of_the_pair_and_of_the_matches_does_not_matter() -> None:
    one = fit([Pairing("m1", "random", 7, 2, 1), Pairing("m2", "m1", 3, 4, 3)], ANCHOR).ratings
    other = fit([Pairing("m1", "m2", 3, 4, 3), Pairing("random", "m1", 1, 2, 7)], ANCHOR).ratings
    for name in ("m1", "m2"):
        assert one[name].elo == pytest.approx(other[name].elo)
        assert one[name].stderr == pytest.approx(other[name].stderr)


@pytest.mark.parametrize("draw_share", [0.0, 0.6])
def test_the_joint_fit_recovers_known_strengths_and_its_intervals_cover_them(draw_share: float) -> None:
    """Seeded: 60 simulated runs of the loop's schedule; the truth lies in the 95% interval about 95% of the time."""
    rng = random.Random(1515)
    covered = total = 0
    errors: dict[str, list[float]] = {name: [] for name in TRUE if name != "random"}
    for _ in range(60):
        ratings = fit(_loop_schedule(rng, 40, draw_share), ANCHOR).ratings
        assert ratings["random"].elo == 0.0
        for name, errs in errors.items():
            estimate = ratings[name]
            errs.append(estimate.elo - TRUE[name])
            covered += abs(estimate.elo - TRUE[name]) <= estimate.half_width(0.95)
            total += 1
    assert 0.88 <= covered / total <= 0.995
    for name, errs in errors.items():
        assert abs(sum(errs) / len(errs)) < 40, name  # nearly unbiased
    one = fit(_loop_schedule(random.Random(7), 200, draw_share), ANCHOR).ratings
    ranked = sorted((name for name in TRUE if name != "random"), key=lambda name: one[name].elo)
    assert ranked == ["m1", "m2", "m3", "mcts", "m4", "m5"]


def test_draws_narrow_the_interval_instead_of_counting_as_coin_tosses() -> None:
    drawn = fit([Pairing("m1", "random", 20, 0, 0), Pairing("m2", "m1", 0, 40, 0)], ANCHOR).ratings
    tossed = fit([Pairing("m1", "random", 20, 0, 0), Pairing("m2", "m1", 20, 0, 20)], ANCHOR).ratings
    gap_drawn = drawn["m2"].stderr ** 2 - drawn["m1"].stderr ** 2
    gap_tossed = tossed["m2"].stderr ** 2 - tossed["m1"].stderr ** 2
    assert drawn["m2"].elo == pytest.approx(drawn["m1"].elo)
    assert 0 < gap_drawn < gap_tossed / 10


def test_a_negative_count_is_refused() -> None:
    with pytest.raises(ZeroloopError, match="negative count"):  # a RegistryError
        fit([Pairing("m1", "random", -1, 0, 3)], ANCHOR)


# --- n-player games ----------------------------------------------------------------------------


def test_an_n_player_game_gives_one_outcome_per_pair_of_distinct_players() -> None:
    outcomes = pairwise_outcomes(["a", "b", "c", "d"], [1.0, -1.0, 0.0, 0.0])
    assert outcomes == {
        ("a", "b"): Tally(1, 0, 0),
        ("a", "c"): Tally(1, 0, 0),
        ("a", "d"): Tally(1, 0, 0),
        ("b", "c"): Tally(0, 0, 1),
        ("b", "d"): Tally(0, 0, 1),
        ("c", "d"): Tally(0, 1, 0),
    }
    # Two models sharing four seats: one outcome, by the mean score of each one's seats.
    assert pairwise_outcomes(["x", "y", "x", "y"], [1.0, 0.0, -1.0, 0.5]) == {("x", "y"): Tally(0, 0, 1)}
    assert pairwise_outcomes(["x", "y", "z"], scores_from_places([2, 1, 2])) == {
        ("x", "y"): Tally(0, 0, 1),
        ("x", "z"): Tally(0, 1, 0),
        ("y", "z"): Tally(1, 0, 0),
    }
    with pytest.raises(WorkloadError, match="one score per seat"):
        pairwise_outcomes(["x", "y"], [1.0])


def test_tallies_add_up_whichever_way_round_a_pair_comes() -> None:
    total: dict[tuple[str, str], Tally] = {}
    add_outcomes(total, {("a", "b"): Tally(1, 0, 0)})
    add_outcomes(total, {("b", "a"): Tally(1, 0, 0)})
    add_outcomes(total, {("b", "a"): Tally(0, 1, 0)})
    assert total == {("a", "b"): Tally(1, 1, 1)}


def test_three_player_results_rate_the_players_in_their_true_order() -> None:
    """Seeded 3-player games (places drawn by strength, Plackett-Luce) decomposed into pairs and fitted."""
    rng = random.Random(3)
    strength = {"random": 0.0, "m1": 200.0, "m2": 400.0}
    total: dict[tuple[str, str], Tally] = {}
    for _ in range(300):
        seats = list(strength)
        rng.shuffle(seats)
        remaining, places = list(seats), {}
        for place in (1, 2, 3):
            weights = [10 ** (strength[name] / 400) for name in remaining]
            chosen = rng.choices(remaining, weights)[0]
            places[chosen] = place
            remaining.remove(chosen)
        add_outcomes(total, pairwise_outcomes(seats, scores_from_places([places[name] for name in seats])))
    pairings = [Pairing(a, b, t.wins, t.draws, t.losses) for (a, b), t in total.items()]
    ratings = fit(pairings, ANCHOR).ratings
    assert 0.0 == ratings["random"].elo < ratings["m1"].elo < ratings["m2"].elo
    for name in ("m1", "m2"):
        assert abs(ratings[name].elo - strength[name]) < 3 * ratings[name].stderr + 30
