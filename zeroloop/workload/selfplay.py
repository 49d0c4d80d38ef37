"""Selfplay: many games in lockstep, each move searched by batched MCTS, written as one game batch.

`parallel_games` games are kept in flight; when one ends, the next game starts in its
slot, so every search step sends a full batch of leaves to the network until the last
games of the request are being played.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from zeroloop.workload.datafiles import Arrays
from zeroloop.workload.games import BoolArray, FloatArray, Game, State, to_mover_frame
from zeroloop.workload.mcts import BatchedMCTS, choose_action

log = logging.getLogger(__name__)


@dataclass
class _GameRecord:
    """Positions of one game in progress."""

    state: State
    obs: list[FloatArray] = field(default_factory=list)
    policy: list[npt.NDArray[np.float32]] = field(default_factory=list)
    mask: list[BoolArray] = field(default_factory=list)
    player: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class SelfplayResult:
    """The arrays of a game batch, and how many network evaluations (leaf states) playing it took."""

    arrays: Arrays
    positions: int
    evaluations: int


def play_games(
    game: Game,
    mcts: BatchedMCTS,
    *,
    games: int,
    parallel: int,
    temperature_moves: int,
    rng: np.random.Generator,
    model_sha256: str,
) -> SelfplayResult:
    """Play `games` selfplay games, `parallel` at a time, and return the game batch arrays."""
    started = 0
    active: list[_GameRecord] = []
    finished: list[tuple[_GameRecord, FloatArray]] = []
    evaluations_before = mcts.evaluations
    # Every game ends within max_length moves, and each pass plays one move in every active game.
    max_passes = (games // max(parallel, 1) + 2) * (game.max_length + 1)
    for _ in range(max_passes):
        while started < games and len(active) < parallel:
            active.append(_GameRecord(game.new_state()))
            started += 1
        if not active:
            break
        states = [record.state for record in active]
        visits = mcts.search(states, add_noise=True)
        still: list[_GameRecord] = []
        for record, counts in zip(active, visits, strict=True):
            record.obs.append(game.observation(record.state))
            record.policy.append((counts / counts.sum()).astype(np.float32))
            record.mask.append(game.legal_mask(record.state))
            record.player.append(game.to_play(record.state))
            action = choose_action(counts, len(record.player) <= temperature_moves, rng)
            game.apply(record.state, action)
            if game.is_terminal(record.state):
                finished.append((record, game.values(record.state)))
            else:
                still.append(record)
        active = still
    log.debug("selfplay of %d %s games finished", len(finished), game.config_key)
    arrays = _to_arrays(game, finished, model_sha256)
    return SelfplayResult(arrays, int(arrays["obs"].shape[0]), mcts.evaluations - evaluations_before)


def _to_arrays(game: Game, finished: list[tuple[_GameRecord, FloatArray]], model_sha256: str) -> Arrays:
    planes, height, width = game.obs_shape
    obs: list[FloatArray] = []
    policy: list[npt.NDArray[np.float32]] = []
    mask: list[BoolArray] = []
    value: list[FloatArray] = []
    index: list[int] = []
    lengths: list[int] = []
    for number, (record, outcome) in enumerate(finished):
        obs.extend(record.obs)
        policy.extend(record.policy)
        mask.extend(record.mask)
        value.extend(to_mover_frame(outcome, player) for player in record.player)
        index.extend([number] * len(record.player))
        lengths.append(len(record.player))
    return {
        "obs": np.stack(obs) if obs else np.zeros((0, planes, height, width), np.float32),
        "policy": np.stack(policy) if policy else np.zeros((0, game.num_actions), np.float32),
        "value": np.stack(value).astype(np.float32) if value else np.zeros((0, game.num_players), np.float32),
        "mask": np.stack(mask) if mask else np.zeros((0, game.num_actions), np.bool_),
        "game_index": np.asarray(index, dtype=np.int32),
        "game_lengths": np.asarray(lengths, dtype=np.int32),
        "config_key": np.asarray(game.config_key),
        "model_sha256": np.asarray(model_sha256),
        "num_games": np.asarray(len(finished), dtype=np.int64),
    }
