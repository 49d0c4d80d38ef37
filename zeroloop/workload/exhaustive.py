"""Is a policy unbeatable? Every line of opponent moves against a fixed move choice, checked.

For small games (tic-tac-toe) the whole tree of opponent replies is walked: on the
policy's turn it plays its one chosen move, on every other turn each legal move is
tried. A line the policy loses (its return is below the best other player's) is counted.
`network_policy` is the network's move choice with no search at all (one simulation:
the highest prior), as in issue 15's tic-tac-toe target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zeroloop.errors import WorkloadError
from zeroloop.workload.games import Game, State
from zeroloop.workload.network import Evaluator, load_net

Chooser = Callable[[State], int]
MAX_LINES = 1_000_000  # a guard against walking a game far too large for this check


@dataclass(frozen=True)
class Exhaustive:
    """The outcome of every line: counted per seat the policy played (lines: terminal positions reached)."""

    lines: int
    lost: int
    drawn: int
    first_loss: list[int] | None  # the actions of one lost line, for a report


def network_policy(game: Game, model: Path, device: str = "cpu") -> Chooser:
    """The move a stored network plays with no search: the legal action of highest prior."""
    net, _payload = load_net(model, game.config_key)
    evaluate = Evaluator(net, device, "float32")  # the policy's own argmax, not bfloat16's rounding of it

    def choose(state: State) -> int:
        priors, _values = evaluate(game.observation(state)[None], game.legal_mask(state)[None])
        return int(np.argmax(priors[0]))

    return choose


def check(game: Game, choose: Chooser) -> Exhaustive:
    """Walk every opponent line against `choose` in every seat; count losses and draws (lines at most MAX_LINES)."""
    lines = lost = drawn = 0
    first_loss: list[int] | None = None
    for seat in range(game.num_players):
        stack: list[list[int]] = [[]]
        while stack:
            actions = stack.pop()
            state = game.state_after(actions)
            if game.is_terminal(state):
                lines += 1
                if lines > MAX_LINES:
                    raise WorkloadError(f"{game.config_key} has over {MAX_LINES} lines: too large to check")
                returns = game.returns(state)
                best_other = max(r for p, r in enumerate(returns) if p != seat)
                if returns[seat] < best_other:
                    lost += 1
                    first_loss = first_loss or actions
                elif returns[seat] == best_other:
                    drawn += 1
                continue
            if game.to_play(state) == seat:
                stack.append([*actions, choose(state)])
            else:
                stack.extend([*actions, action] for action in game.legal_actions(state))
    return Exhaustive(lines, lost, drawn, first_loss)
