"""Selfplay: many games in lockstep, each move searched by batched MCTS, written as one game batch.

`parallel_games` games are kept in flight; when one ends, the next game starts in its
slot, so every search step sends a full batch of leaves to the network until the last
games of the request are being played.

Playout-cap randomisation (KataGo): with `full_share` below 1, each move is searched in
full (with root noise, and recorded as a training target) with that probability, and
otherwise by a fast search of `fast_simulations` (no noise, not recorded), so more games
are finished for the same compute while every target still comes from a full search.
With `reuse`, the subtree under the move played carries into the next search.

Each recorded position also keeps the search's own value of it (`search_value`, every
player's, in the mover's frame), which training may mix into the outcome as a value target.

A game still running after `max_moves` moves is cut off: its value targets come from
`progress.truncation_values` (the game's progress measure, or its returns so far), and
the batch counts it in `truncated`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from zeroloop.workload.datafiles import Arrays
from zeroloop.workload.games import BoolArray, FloatArray, Game, State, to_mover_frame
from zeroloop.workload.mcts import BatchedMCTS, choose_action
from zeroloop.workload.progress import truncation_values
from zeroloop.workload.tree import SearchTree

log = logging.getLogger(__name__)


@dataclass
class _GameRecord:
    """Positions of one game in progress."""

    state: State
    obs: list[FloatArray] = field(default_factory=list)
    policy: list[npt.NDArray[np.float32]] = field(default_factory=list)
    mask: list[BoolArray] = field(default_factory=list)
    player: list[int] = field(default_factory=list)
    search_value: list[FloatArray] = field(default_factory=list)
    moves: int = 0
    tree: SearchTree | None = None


@dataclass(frozen=True)
class SelfplayResult:
    """The arrays of a game batch, how many network evaluations (leaf states) playing it took, and how
    many of its games were cut off at the move cap."""

    arrays: Arrays
    positions: int
    evaluations: int
    truncated: int = 0


def play_games(
    game: Game,
    mcts: BatchedMCTS,
    *,
    games: int,
    parallel: int,
    temperature_moves: int,
    rng: np.random.Generator,
    model_sha256: str,
    full_share: float = 1.0,
    fast_simulations: int = 0,
    reuse: bool = False,
    max_moves: int = 0,
) -> SelfplayResult:
    """Play `games` selfplay games, `parallel` at a time, and return the game batch arrays.

    `full_share` (0 to 1) of the moves get a full search and are recorded; the rest get
    `fast_simulations` and are not. `reuse` carries each game's subtree into its next move.
    `max_moves` (0: none) cuts a game off after that many moves.
    """
    started = 0
    active: list[_GameRecord] = []
    finished: list[tuple[_GameRecord, FloatArray]] = []
    evaluations_before = mcts.evaluations
    cut_off = truncation_values(game)
    truncated = 0
    # Every game ends within max_length moves, and each pass plays one move in every active game.
    max_passes = (games // max(parallel, 1) + 2) * (game.max_length + 1)
    for _ in range(max_passes):
        while started < games and len(active) < parallel:
            active.append(_GameRecord(game.new_state()))
            started += 1
        if not active:
            break
        states = [record.state for record in active]
        full = [full_share >= 1.0 or bool(rng.random() < full_share) for _ in active]
        budgets = [mcts.config.simulations if f else fast_simulations for f in full]
        trees = [record.tree for record in active]
        result = mcts.run(states, explore=full, simulations=budgets, reuse=trees)
        still: list[_GameRecord] = []
        for row, record in enumerate(active):
            if full[row]:
                record.obs.append(game.observation(record.state))
                record.policy.append(result.policy[row])
                record.mask.append(game.legal_mask(record.state))
                record.player.append(game.to_play(record.state))
                record.search_value.append(result.value[row])
            record.moves += 1
            if mcts.config.gumbel is not None:
                action = int(result.action[row])  # the Gumbel noise already explores
            else:
                action = choose_action(result.visits[row], record.moves <= temperature_moves, rng)
            record.tree = result.trees[row].advance(action) if reuse else None
            game.apply(record.state, action)
            if game.is_terminal(record.state):
                finished.append((record, game.values(record.state)))
            elif 0 < max_moves <= record.moves:
                finished.append((record, cut_off(record.state)))
                truncated += 1
            else:
                still.append(record)
        active = still
    log.debug("selfplay of %d %s games finished", len(finished), game.config_key)
    arrays = _to_arrays(game, finished, model_sha256)
    return SelfplayResult(arrays, int(arrays["obs"].shape[0]), mcts.evaluations - evaluations_before, truncated)


def _to_arrays(game: Game, finished: list[tuple[_GameRecord, FloatArray]], model_sha256: str) -> Arrays:
    planes, height, width = game.obs_shape
    obs: list[FloatArray] = []
    policy: list[npt.NDArray[np.float32]] = []
    mask: list[BoolArray] = []
    value: list[FloatArray] = []
    search_value: list[FloatArray] = []
    index: list[int] = []
    lengths: list[int] = []
    moves: list[int] = []
    for number, (record, outcome) in enumerate(finished):
        obs.extend(record.obs)
        policy.extend(record.policy)
        mask.extend(record.mask)
        value.extend(to_mover_frame(outcome, player) for player in record.player)
        search_value.extend(record.search_value)
        index.extend([number] * len(record.player))
        lengths.append(len(record.player))
        moves.append(record.moves)
    return {
        "obs": np.stack(obs) if obs else np.zeros((0, planes, height, width), np.float32),
        "policy": np.stack(policy) if policy else np.zeros((0, game.num_actions), np.float32),
        "value": np.stack(value).astype(np.float32) if value else np.zeros((0, game.num_players), np.float32),
        "search_value": (
            np.stack(search_value).astype(np.float32) if search_value else np.zeros((0, game.num_players), np.float32)
        ),
        "mask": np.stack(mask) if mask else np.zeros((0, game.num_actions), np.bool_),
        "game_index": np.asarray(index, dtype=np.int32),
        "game_lengths": np.asarray(lengths, dtype=np.int32),
        "game_moves": np.asarray(moves, dtype=np.int32),
        "config_key": np.asarray(game.config_key),
        "model_sha256": np.asarray(model_sha256),
        "num_games": np.asarray(len(finished), dtype=np.int64),
    }
