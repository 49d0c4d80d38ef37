"""Learning diagnostics per round, as plain numbers in the evidence of the export and train jobs.

OpenSpiel's AlphaZero logs, each step, the value accuracy by game stage, the outcome and
game-length histograms, the policy entropy and the losses; these are the same figures per
round of the loop, flattened into evidence counts (name -> number), so the job's record,
its artifact's manifest entry and a dashboard chart can read them without parsing a file.

Export (the games in the window):

- `games`: games with positions in the window; `length_mean`, `length_p10`, `length_p50`,
  `length_p90`: their recorded positions per game;
- `outcome_win_seat{k}`: share of those games won by seat k alone (the highest return,
  untied); `outcome_draw`: share where the best return is shared.

Train (measured after the last step, on up to `DIAGNOSTIC_SAMPLES` rows of the window, in eval mode):

- `policy_loss`, `value_loss`: the mean losses of the last reporting interval;
- `value_accuracy_{opening,middle,end}`: share of positions of decided games (the
  mover's outcome not 0) where the sign of the mover's predicted value is the outcome's,
  by the position's third of its game (ply / length); `value_mse_{opening,middle,end}`:
  the squared error of the value vector there; a stage with no position is left out;
- `policy_entropy`: mean entropy of the network's policy over legal moves (nats);
  `target_entropy`: that of the search's targets; `policy_agreement`: share of positions
  where the network's top move is the target's.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

from zeroloop.workload.datafiles import Arrays

DIAGNOSTIC_SAMPLES = 4096  # window rows the train diagnostics are measured on (at most)
STAGES = ("opening", "middle", "end")


def ply_and_length(arrays: Arrays) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
    """Each position's recorded move number in its game (0-based) and that game's recorded length."""
    index = arrays["game_index"].astype(np.int64)
    lengths = arrays["game_lengths"].astype(np.int64)
    if index.size == 0:
        empty = np.zeros(0, np.int32)
        return empty, empty
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    ply = np.arange(index.size) - starts[index]
    return ply.astype(np.int32), lengths[index].astype(np.int32)


def window_figures(window: Arrays) -> dict[str, float]:
    """Outcome and length figures of the games whose positions are in a window.

    A game is recognised by its last position in the window (ply + 1 == length), whose value
    row is its outcome in that mover's frame; the mover is read from the to-move planes.
    Over an augmented window every game counts once per symmetry: the shares are the same.
    """
    value, obs, ply, length = (window[key] for key in ("value", "obs", "ply", "length"))
    players = value.shape[1]
    last = np.flatnonzero(ply + 1 == length)
    if last.size == 0:
        return {"games": 0.0}
    movers = obs[last, -players:, 0, 0].argmax(axis=1)
    outcomes = np.stack([np.roll(value[row], mover) for row, mover in zip(last, movers, strict=True)])
    best = outcomes.max(axis=1, keepdims=True)
    alone = (outcomes == best).sum(axis=1) == 1
    lengths = length[last].astype(np.float64)
    figures = {
        "games": float(last.size),
        "length_mean": float(lengths.mean()),
        **{f"length_p{q}": float(np.percentile(lengths, q)) for q in (10, 50, 90)},
        "outcome_draw": float((~alone).mean()),
    }
    winners = outcomes.argmax(axis=1)
    for seat in range(players):
        figures[f"outcome_win_seat{seat}"] = float((alone & (winners == seat)).mean())
    return figures


@torch.inference_mode()
def training_figures(net: torch.nn.Module, window: Arrays, device: torch.device, seed: int) -> dict[str, float]:
    """Value accuracy and error by game stage, and policy entropy and agreement, of `net` on window rows."""
    count = window["obs"].shape[0]
    rows = np.random.default_rng(seed).permutation(count)[:DIAGNOSTIC_SAMPLES]
    obs = torch.from_numpy(window["obs"][rows].astype(np.float32)).to(device)
    was_training = net.training
    net.eval()
    logits, predicted = net(obs)
    net.train(was_training)
    mask = torch.from_numpy(window["mask"][rows]).to(device)
    log_policy = torch.log_softmax(logits.float().masked_fill(~mask, float("-inf")), dim=1)
    policy = log_policy.exp()
    entropy = -(policy * log_policy.masked_fill(~mask, 0.0)).sum(dim=1)
    target = window["policy"][rows].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        target_entropy = -np.where(target > 0, target * np.log(target), 0.0).sum(axis=1)
    figures = {
        "policy_entropy": float(entropy.mean()),
        "target_entropy": float(target_entropy.mean()),
        "policy_agreement": float((policy.argmax(dim=1).cpu().numpy() == target.argmax(axis=1)).mean()),
    }
    if "ply" not in window or "length" not in window:
        return figures  # a window from before the diagnostics: no game stages
    value = window["value"][rows].astype(np.float32)
    guess = predicted.float().cpu().numpy()
    stage = np.minimum(3 * window["ply"][rows] // np.maximum(window["length"][rows], 1), 2)
    for number, name in enumerate(STAGES):
        here = stage == number
        if here.any():
            figures[f"value_mse_{name}"] = float(((guess[here] - value[here]) ** 2).mean())
        decided = here & (value[:, 0] != 0)
        if decided.any():
            figures[f"value_accuracy_{name}"] = float((np.sign(guess[decided, 0]) == np.sign(value[decided, 0])).mean())
    return figures
