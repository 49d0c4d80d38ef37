"""OpenSpiel games behind typed helpers, and the config keys (`{game}_{n}p`) that name them.

pyspiel has no type information, so every call into it goes through `Game`, which
returns numpy arrays and plain Python values. Only two-player, zero-sum, deterministic,
perfect-information sequential games with an observation tensor are supported: the
AlphaZero value target (one number from the mover's point of view) needs exactly that.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pyspiel

from zeroloop.errors import WorkloadError

State = Any  # a pyspiel.State; pyspiel ships no type stubs
FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]

_CONFIG_KEY = re.compile(r"^(?P<game>[a-z][a-z0-9_]*)_(?P<players>\d+)p$")
_PLAYERS = 2


def _is_supported(game_type: Any) -> bool:
    kinds = pyspiel.GameType
    return bool(
        game_type.dynamics == kinds.Dynamics.SEQUENTIAL
        and game_type.chance_mode == kinds.ChanceMode.DETERMINISTIC
        and game_type.information == kinds.Information.PERFECT_INFORMATION
        and game_type.utility == kinds.Utility.ZERO_SUM
        and game_type.min_num_players <= _PLAYERS <= game_type.max_num_players
        and game_type.provides_observation_tensor
    )


def supported_games() -> list[str]:
    """Names of the registered OpenSpiel games the built-in AlphaZero can play, sorted."""
    return sorted(str(t.short_name) for t in pyspiel.registered_games() if _is_supported(t))


def _unsupported(config_key: str, why: str) -> WorkloadError:
    keys = ", ".join(f"{name}_2p" for name in supported_games())
    return WorkloadError(f"config key {config_key!r} is not supported: {why}; supported config keys are: {keys}")


class Game:
    """One loaded OpenSpiel game with typed accessors for states, observations and masks."""

    def __init__(self, config_key: str, params: Mapping[str, int | float | bool | str] | None = None) -> None:
        match = _CONFIG_KEY.match(config_key)
        if match is None:
            raise _unsupported(config_key, "expected the form {game}_{n}p, e.g. connect_four_2p")
        name, players = match["game"], int(match["players"])
        types = {str(t.short_name): t for t in pyspiel.registered_games()}
        if name not in types:
            raise _unsupported(config_key, f"OpenSpiel has no game named {name!r}")
        if players != _PLAYERS or not _is_supported(types[name]):
            raise _unsupported(
                config_key, "only two-player zero-sum deterministic perfect-information sequential games are"
            )
        self.config_key = config_key
        self.name = name
        self.params: dict[str, int | float | bool | str] = dict(params or {})
        try:
            self._game = pyspiel.load_game(name, self.params)
        except pyspiel.SpielError as exc:
            raise WorkloadError(f"cannot load {name} with parameters {self.params}: {exc}") from None
        if int(self._game.num_players()) != _PLAYERS:
            raise _unsupported(config_key, f"{name} loaded with {self._game.num_players()} players")
        self.num_actions: int = int(self._game.num_distinct_actions())
        self.max_length: int = int(self._game.max_game_length())
        self.raw_shape: tuple[int, ...] = tuple(int(d) for d in self._game.observation_tensor_shape())
        self.obs_shape: tuple[int, int, int] = _as_planes(self.raw_shape)

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
        """The player to move in a non-terminal `state` (0 or 1)."""
        return int(state.current_player())

    @staticmethod
    def legal_actions(state: State) -> list[int]:
        """The legal actions in `state`, ascending."""
        return [int(a) for a in state.legal_actions()]

    @staticmethod
    def returns(state: State) -> tuple[float, float]:
        """Final returns of players 0 and 1 in a terminal `state` (+1 win, 0 draw, -1 loss)."""
        values = state.returns()
        return float(values[0]), float(values[1])

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
        """The observation planes of the player to move, shaped `obs_shape`."""
        values = np.asarray(state.observation_tensor(int(state.current_player())), dtype=np.float32)
        return values.reshape(self.obs_shape)

    def legal_mask(self, state: State) -> BoolArray:
        """A boolean vector over all `num_actions`, True where the action is legal."""
        mask = np.zeros(self.num_actions, dtype=np.bool_)
        mask[state.legal_actions()] = True
        return mask


def _as_planes(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Fit any observation shape to (channels, height, width) so one network code path serves all."""
    if len(shape) == 3:
        return shape[0], shape[1], shape[2]
    if len(shape) == 2:
        return 1, shape[0], shape[1]
    return int(np.prod(shape)), 1, 1
