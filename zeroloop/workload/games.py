"""OpenSpiel games behind typed helpers, and the config keys (`{game}_{n}p`) that name them.

pyspiel has no type information, so every call into it goes through `Game`, which
returns numpy arrays and plain Python values. Supported are deterministic,
perfect-information, sequential games with 2 to 6 players and an observation tensor:
the value target is one number per player, so any number of players and any utility
(zero-sum or not) fits. Chance and simultaneous-move games are refused with a message
saying what is supported.

The network input is OpenSpiel's observation of the player to move followed by one
constant plane per player, all ones for the player to move: OpenSpiel's tensors for
many games (connect_four, tic_tac_toe, quoridor) are the same for every player, so
without these planes the network could not tell whose turn it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyspiel
from open_spiel.python.observation import make_observation

from zeroloop.errors import WorkloadError
from zeroloop.workload.keys import base_key

State = Any  # a pyspiel.State; pyspiel ships no type stubs
FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]

_CONFIG_KEY = re.compile(r"^(?P<game>[a-z][a-z0-9_]*)_(?P<players>\d+)p$")
MIN_PLAYERS = 2
MAX_PLAYERS = 6
# OpenSpiel names the player-count parameter differently per game.
_PLAYER_PARAMS = ("players", "num_players")
_SUPPORTED = (
    f"supported are deterministic, sequential, perfect-information games with {MIN_PLAYERS} to "
    f"{MAX_PLAYERS} players and an observation tensor"
)


def _why_unsupported(game_type: Any) -> str | None:
    """What keeps a game type from being played, or None when it can be."""
    kinds = pyspiel.GameType
    if game_type.dynamics != kinds.Dynamics.SEQUENTIAL:
        return "it is a simultaneous-move game"
    if game_type.chance_mode != kinds.ChanceMode.DETERMINISTIC:
        return "it has chance events"
    if game_type.information != kinds.Information.PERFECT_INFORMATION:
        return "it has imperfect information"
    if game_type.max_num_players < MIN_PLAYERS or game_type.min_num_players > MAX_PLAYERS:
        return f"it is played by {game_type.min_num_players} to {game_type.max_num_players} players"
    if not game_type.provides_observation_tensor:
        return "it provides no observation tensor"
    return None


def _player_counts(game_type: Any) -> range:
    low = max(int(game_type.min_num_players), MIN_PLAYERS)
    return range(low, min(int(game_type.max_num_players), MAX_PLAYERS) + 1)


def supported_games() -> list[str]:
    """Names of the registered OpenSpiel games the built-in AlphaZero can play, sorted."""
    return sorted(str(t.short_name) for t in pyspiel.registered_games() if _why_unsupported(t) is None)


def supported_keys() -> list[str]:
    """Every config key the built-in AlphaZero accepts, e.g. `chinese_checkers_3p`, sorted."""
    types = [t for t in pyspiel.registered_games() if _why_unsupported(t) is None]
    return sorted(f"{t.short_name}_{n}p" for t in types for n in _player_counts(t))


def _unsupported(config_key: str, why: str) -> WorkloadError:
    keys = ", ".join(supported_keys())
    return WorkloadError(
        f"config key {config_key!r} is not supported: {why}; {_SUPPORTED}. Supported config keys are: {keys}"
    )


class Game:
    """One loaded OpenSpiel game with typed accessors for states, observations, masks and outcomes."""

    def __init__(self, config_key: str, params: Mapping[str, int | float | bool | str] | None = None) -> None:
        """Load the game of `config_key` (a variant key plays its base key's game) with OpenSpiel `params`."""
        match = _CONFIG_KEY.match(base_key(config_key))
        if match is None:
            raise _unsupported(config_key, "expected the form {game}_{n}p, e.g. connect_four_2p")
        name, players = match["game"], int(match["players"])
        types = {str(t.short_name): t for t in pyspiel.registered_games()}
        if name not in types:
            raise _unsupported(config_key, f"OpenSpiel has no game named {name!r}")
        game_type = types[name]
        why = _why_unsupported(game_type)
        if why is not None:
            raise _unsupported(config_key, f"{name}: {why}")
        if players not in _player_counts(game_type):
            counts = _player_counts(game_type)
            raise _unsupported(config_key, f"{name} is played by {counts.start} to {counts.stop - 1} players")
        self.config_key = config_key
        self.name = name
        self.params: dict[str, int | float | bool | str] = dict(params or {})
        spec = dict(game_type.parameter_specification)
        player_param = next((p for p in _PLAYER_PARAMS if p in spec), None)
        if player_param is not None:
            given = self.params.setdefault(player_param, players)
            if given != players:
                raise WorkloadError(
                    f"game parameters of {config_key} set {player_param}={given}, but the config key says "
                    f"{players} players; drop {player_param} from workload.game_params"
                )
        try:
            self._game = pyspiel.load_game(name, self.params)
        except pyspiel.SpielError as exc:
            raise WorkloadError(f"cannot load {name} with parameters {self.params}: {exc}") from None
        if int(self._game.num_players()) != players:
            raise _unsupported(config_key, f"{name} loaded with {self._game.num_players()} players")
        self.num_players: int = players
        self.num_actions: int = int(self._game.num_distinct_actions())
        self.max_length: int = int(self._game.max_game_length())
        self.raw_shape: tuple[int, ...] = tuple(int(d) for d in self._game.observation_tensor_shape())
        planes, height, width = _as_planes(self.raw_shape)
        self.obs_shape: tuple[int, int, int] = (planes + players, height, width)
        self._raw_planes = planes
        # Every supported game declares a bounded range of returns (min below max).
        self._utility_low = float(self._game.min_utility())
        self._utility_span = float(self._game.max_utility()) - self._utility_low
        self._observer: Any = None  # made on first use: an OpenSpiel observer writing into a numpy buffer

    @property
    def openspiel(self) -> Any:
        """The loaded pyspiel game, for OpenSpiel's own algorithms (its MCTSBot judges strength)."""
        return self._game

    def new_state(self) -> State:
        """A fresh initial state."""
        return self._game.new_initial_state()

    def state_after(self, actions: list[int]) -> State:
        """The state reached by applying `actions` to the initial state."""
        state = self.new_state()
        for action in actions:
            state.apply_action(int(action))
        return state

    @staticmethod
    def is_terminal(state: State) -> bool:
        """Whether the game in `state` is over."""
        return bool(state.is_terminal())

    @staticmethod
    def to_play(state: State) -> int:
        """The player to move in a non-terminal `state` (0 to num_players - 1)."""
        return int(state.current_player())

    @staticmethod
    def legal_actions(state: State) -> list[int]:
        """The legal actions in `state`, ascending."""
        return [int(a) for a in state.legal_actions()]

    @staticmethod
    def returns(state: State) -> list[float]:
        """OpenSpiel's final returns of every player in a terminal `state`, in the game's own units."""
        return [float(v) for v in state.returns()]

    def values(self, state: State) -> FloatArray:
        """Final returns of every player in a terminal `state`, scaled to [-1, 1] (worst to best possible)."""
        raw = np.asarray(state.returns(), dtype=np.float64)
        return (2.0 * (raw - self._utility_low) / self._utility_span - 1.0).astype(np.float32)

    @staticmethod
    def apply(state: State, action: int) -> None:
        """Play `action` in `state`, in place."""
        state.apply_action(int(action))

    @staticmethod
    def child(state: State, action: int) -> State:
        """A copy of `state` with `action` played."""
        copy = state.clone()
        copy.apply_action(int(action))
        return copy

    def observation(self, state: State) -> FloatArray:
        """The network input for the player to move in `state`, shaped `obs_shape`."""
        return self.input_planes(state, int(state.current_player()))

    def input_planes(self, state: State, mover: int) -> FloatArray:
        """The network input of `state` with `mover` to move: its OpenSpiel observation, then the to-move planes.

        Plane `raw planes + p` is all ones when player p is to move and all zeros otherwise.
        """
        planes = np.zeros(self.obs_shape, dtype=np.float32)
        raw = np.asarray(state.observation_tensor(mover), dtype=np.float32)
        planes[: self._raw_planes] = raw.reshape(self._raw_planes, *self.obs_shape[1:])
        planes[self._raw_planes + mover] = 1.0
        return planes

    def observations(self, states: Sequence[State]) -> FloatArray:
        """The network inputs of many states at once, (len(states), *obs_shape): `observation` of each.

        OpenSpiel writes each observation straight into a reused buffer (no Python list
        in between), which makes a batch of leaves several times cheaper to gather.
        """
        if self._observer is None:
            self._observer = make_observation(self._game)
        observer = self._observer
        planes = np.zeros((len(states), *self.obs_shape), dtype=np.float32)
        raw_shape = (self._raw_planes, *self.obs_shape[1:])
        for row, state in enumerate(states):
            mover = int(state.current_player())
            observer.set_from(state, mover)
            planes[row, : self._raw_planes] = observer.tensor.reshape(raw_shape)
            planes[row, self._raw_planes + mover] = 1.0
        return planes

    def legal_masks(self, states: Sequence[State]) -> BoolArray:
        """`legal_mask` of many states at once, (len(states), num_actions)."""
        masks = np.zeros((len(states), self.num_actions), dtype=np.bool_)
        for row, state in enumerate(states):
            masks[row, state.legal_actions()] = True
        return masks

    def legal_mask(self, state: State) -> BoolArray:
        """A boolean vector over all `num_actions`, True where the action is legal."""
        mask = np.zeros(self.num_actions, dtype=np.bool_)
        mask[state.legal_actions()] = True
        return mask


def to_mover_frame(values: FloatArray, mover: int) -> FloatArray:
    """Per-player values reordered so entry k belongs to the player k seats after `mover` (entry 0: the mover)."""
    return np.roll(values, -mover, axis=-1)


def from_mover_frame(values: FloatArray, mover: int) -> FloatArray:
    """The inverse of `to_mover_frame`: entry p belongs to player p."""
    return np.roll(values, mover, axis=-1)


def _as_planes(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Fit any observation shape to (channels, height, width) so one network code path serves all."""
    if len(shape) == 3:
        return shape[0], shape[1], shape[2]
    if len(shape) == 2:
        return 1, shape[0], shape[1]
    return int(np.prod(shape)), 1, 1
