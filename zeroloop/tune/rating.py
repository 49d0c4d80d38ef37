"""The population's one joint rating: every model of every variant, and the baselines, on one scale.

Each variant is a pipeline of its own, whose matches (gating, baselines, tournaments) the
coordinator records under its key; the matches between variants are recorded under the
tune's population key (`connect_four_2p~t1`). One Bradley-Terry fit over all of them
(zeroloop.pipeline.bradley_terry, random play anchored at 0, `evaluation.rating_prior_games`
virtual drawn games per pair) rates every model of the population together: the variants
are linked directly by their matches, and through the baselines they all play.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.engine import Connection

from zeroloop.pipeline import bradley_terry
from zeroloop.pipeline.registry import BASELINE_ELO
from zeroloop.store.queries import tunes as queries


def population_ratings(
    conn: Connection, config_keys: Iterable[str], prior_games: float
) -> dict[str, bradley_terry.Estimate]:
    """The joint rating of every player of the matches recorded under `config_keys` (Elo, random play = 0)."""
    pairings = [
        bradley_terry.Pairing(row["player_a"], row["player_b"], row["wins"], row["draws"], row["losses"])
        for row in queries.matches_of_keys(conn, config_keys)
    ]
    if not pairings:
        return {}
    return bradley_terry.fit(pairings, BASELINE_ELO, prior_games=prior_games).ratings
