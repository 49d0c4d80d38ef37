"""The built-in workload: AlphaZero in PyTorch on OpenSpiel games, one config key per game.

`AlphaZeroWorkload(settings.workload)` implements the `Workload` protocol. Each call
loads what it needs from its input files, does the work synchronously, writes its output
atomically and returns evidence with the sha256 of every file written.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zeroloop.config import WorkloadSettings
from zeroloop.errors import WorkloadError
from zeroloop.workload.datafiles import Arrays, load_window, write_npz
from zeroloop.workload.diagnostics import window_figures
from zeroloop.workload.distill import parameter_count, teacher_targets
from zeroloop.workload.games import Game
from zeroloop.workload.gumbel import GumbelConfig
from zeroloop.workload.keys import TUNED_KEY, base_key
from zeroloop.workload.match import MoveChooser, mctsbot_chooser, play_match, random_chooser, search_chooser
from zeroloop.workload.mcts import BatchedMCTS, LeafEvaluator, SearchConfig, network_leaves, rollout_leaves
from zeroloop.workload.network import Evaluator, NetShape, PolicyValueNet, load_net, new_net, tuned_settings
from zeroloop.workload.params import AlphaZeroParams
from zeroloop.workload.progress import truncation_values
from zeroloop.workload.protocol import (
    DistillRequest,
    EvaluateRequest,
    Evidence,
    ExportRequest,
    FileKind,
    Operation,
    OutputFile,
    Player,
    ProgressCallback,
    SelfplayRequest,
    TrainRequest,
    file_sha256,
    no_progress,
)
from zeroloop.workload.selfplay import play_games
from zeroloop.workload.train import train_net
from zeroloop.workload.window import build_window

log = logging.getLogger(__name__)

NO_MODEL_SHA256 = "none"


def quality_counts(arrays: Arrays) -> dict[str, float]:
    """What the selfplay quality monitor reads from a game batch (zeroloop.pipeline.quality):
    `draws`, games whose players all got the same outcome; `distinct_outcomes`, how many
    different outcomes (each player's, seen from the first seat) the games ended in; and
    `policy_entropy`, the mean entropy of the search's move distribution per recorded position (nats)."""
    _games, first = np.unique(arrays["game_index"], return_index=True)  # each game's first position
    draws = int((np.ptp(arrays["value"][first], axis=1) == 0.0).sum())
    # The last input planes name the mover (one per player), so each outcome is turned to the first seat's frame.
    players = arrays["value"].shape[1]
    movers = arrays["obs"][first, -players:, 0, 0].argmax(axis=1) if "obs" in arrays else np.zeros_like(first)
    outcomes = {tuple(np.roll(arrays["value"][row], mover)) for row, mover in zip(first, movers, strict=True)}
    policy = arrays["policy"].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(policy > 0, policy * np.log(policy), 0.0).sum(axis=1)
    return {
        "draws": draws,
        "distinct_outcomes": len(outcomes),
        "policy_entropy": float(entropy.mean()) if len(entropy) else 0.0,
    }


class AlphaZeroWorkload:
    """Selfplay, export, train and evaluate for any supported OpenSpiel game, configured by WorkloadSettings."""

    def __init__(self, settings: WorkloadSettings) -> None:
        self.settings = settings
        if settings.torch_threads > 0:
            torch.set_num_threads(settings.torch_threads)

    def game(self, config_key: str) -> Game:
        """The game of `config_key` (a variant's: its base key's), with its configured OpenSpiel parameters."""
        params = self.settings.game_params
        return Game(config_key, params.get(config_key, params.get(base_key(config_key))))

    def params(self, config_key: str, tuned: Mapping[str, float | bool] | None = None) -> AlphaZeroParams:
        """The AlphaZero parameters of `config_key`, with a variant model's `tuned` settings over them."""
        return AlphaZeroParams.resolve(self.settings, config_key, tuned)

    def net_shape(self, game: Game) -> NetShape:
        """The network shape configured for `game`."""
        params = self.params(game.config_key)
        return NetShape(
            game.obs_shape, game.num_actions, params.blocks, params.channels, params.value_hidden, game.num_players
        )

    def evaluator(self, net: PolicyValueNet) -> Evaluator:
        """Batched inference of `net` on the configured device and precision."""
        return Evaluator(net, self.settings.device, self.settings.inference_precision)

    def load_or_new(self, game: Game, model: Path | None, seed: int) -> tuple[PolicyValueNet, str]:
        """The network in `model` (checked against the game) or a fresh one, and the model file's sha256."""
        net, sha, _tuned = self.load_member(game, model, seed)
        return net, sha

    def load_member(
        self, game: Game, model: Path | None, seed: int
    ) -> tuple[PolicyValueNet, str, dict[str, float | bool]]:
        """`load_or_new`, and the settings the model file carries for its variant (empty for a plain model)."""
        if model is None:
            return new_net(self.net_shape(game), seed), NO_MODEL_SHA256, {}
        net, payload = load_net(model, game.config_key)
        fits = (net.shape.obs_shape, net.shape.num_actions, net.shape.num_players)
        if fits != (game.obs_shape, game.num_actions, game.num_players):
            raise WorkloadError(f"model file {model} does not fit {game.config_key} with its configured parameters")
        return net, file_sha256(model), tuned_settings(payload)

    def selfplay(self, request: SelfplayRequest) -> Evidence:
        """Play `request.games` games and write them as one game batch."""
        began = _Began.now()
        if request.games < 1:
            raise WorkloadError(f"selfplay needs at least one game, got {request.games}")
        game = self.game(request.config_key)
        net, model_sha, tuned = self.load_member(game, request.model, request.seed)
        params = self.params(request.config_key, tuned)  # a variant plays with the settings its model carries
        rng = np.random.default_rng(request.seed)
        search = SearchConfig(
            params.simulations, params.c_puct, params.dirichlet_alpha, params.dirichlet_epsilon, gumbel_of(params)
        )
        mcts = BatchedMCTS(game, network_leaves(game, self.evaluator(net)), search, rng)
        result = play_games(
            game,
            mcts,
            games=request.games,
            parallel=params.parallel_games,
            temperature_moves=params.temperature_moves,
            rng=rng,
            model_sha256=model_sha,
            full_share=params.full_search_share,
            fast_simulations=params.fast_simulations,
            reuse=params.tree_reuse,
            max_moves=params.selfplay_max_moves,
        )
        write_npz(request.output, result.arrays)
        counts = {
            "games": int(result.arrays["num_games"]),
            "positions": result.positions,
            "evaluations": result.evaluations,
            "truncated": result.truncated,
            **quality_counts(result.arrays),
        }
        return self._evidence(
            "selfplay", request.config_key, request.output, FileKind.GAME_BATCH, counts=counts, began=began
        )

    def export(self, request: ExportRequest) -> Evidence:
        """Write a training window of the newest positions of `request.inputs`, augmented by symmetries."""
        began = _Began.now()
        game = self.game(request.config_key)
        window = build_window(game, request.inputs, request.window_samples, np.random.default_rng(request.seed))
        write_npz(request.output, window)
        figures = window_figures(window)
        figures["games"] /= int(window["symmetries"])  # each game is in the window once per symmetry
        counts = {
            "samples": int(window["obs"].shape[0]),
            "source_samples": int(window["source_samples"]),
            "symmetries": int(window["symmetries"]),
            "input_files": len(request.inputs),
            **figures,
        }
        return self._evidence(
            "export", request.config_key, request.output, FileKind.TRAINING_WINDOW, counts=counts, began=began
        )

    def train(self, request: TrainRequest, progress: ProgressCallback = no_progress) -> Evidence:
        """Train on `request.window` and write the model file (also the resumable checkpoint)."""
        began = _Began.now()
        game = self.game(request.config_key)
        window = load_window(request.window, request.config_key)
        if window["obs"].shape[1:] != game.obs_shape:
            raise WorkloadError(f"training window {request.window} does not fit {request.config_key}")
        net, _, tuned = self.load_member(game, request.init_model, request.seed)
        params = self.params(request.config_key, tuned)  # a variant trains with its settings, and passes them on
        steps = train_steps(request, params)
        result = train_net(
            net,
            window,
            params=params,
            steps=steps,
            output=request.output,
            config_key=request.config_key,
            window_sha256=file_sha256(request.window),
            device=self.settings.device,
            seed=request.seed,
            progress=progress,
            carry={TUNED_KEY: tuned} if tuned else None,
        )
        counts = {
            "steps": result.step,
            "steps_run": result.steps_run,
            "resumed_from_step": result.resumed_from_step,
            "samples": result.samples,
            "window_rows": result.window_rows,
            "batch_draws": result.batch_draws,
            "loss": result.loss,
            **result.diagnostics,
        }
        return self._evidence("train", request.config_key, request.output, FileKind.MODEL, counts=counts, began=began)

    def evaluate(self, request: EvaluateRequest) -> Evidence:
        """Play a match between `request.candidate` and `request.opponent` and write its result as JSON."""
        began = _Began.now()
        if request.games < 1:
            raise WorkloadError(f"evaluation needs at least one game, got {request.games}")
        game = self.game(request.config_key)
        params = self.params(request.config_key)
        rng = np.random.default_rng(request.seed)
        candidate = self._chooser(game, params, request.candidate, rng)
        opponent = self._chooser(game, params, request.opponent, rng)
        result = play_match(game, candidate, opponent, request.games, params, seed=request.seed)
        result = {
            "config_key": request.config_key,
            "candidate": request.candidate.label(),
            "opponent": request.opponent.label(),
            **result,
        }
        _write_json(request.output, result)
        names = ("games", "wins", "draws", "losses", "elo", "elo_low", "elo_high", "players")
        counts = {key: result[key] for key in names}
        return self._evidence(
            "evaluate", request.config_key, request.output, FileKind.MATCH_RESULT, counts=counts, began=began
        )

    def distill(self, request: DistillRequest, progress: ProgressCallback = no_progress) -> Evidence:
        """Train a fresh `blocks` x `channels` network on the window towards the teacher's policy and value.

        The student keeps the teacher's tuned settings (a variant's) but its own shape; the
        evidence counts both networks' sizes in parameters.
        """
        began = _Began.now()
        if request.blocks < 0 or request.channels < 1:
            raise WorkloadError(
                f"a distilled network needs blocks >= 0 and channels >= 1, got {request.blocks}, {request.channels}"
            )
        game = self.game(request.config_key)
        window = load_window(request.window)
        if (
            base_key(str(window["config_key"])) != base_key(request.config_key)
            or window["obs"].shape[1:] != game.obs_shape
        ):
            raise WorkloadError(f"training window {request.window} does not fit {request.config_key}")
        teacher, teacher_sha, tuned = self.load_member(game, request.teacher, request.seed)
        student_tuned = {k: v for k, v in tuned.items() if k not in ("blocks", "channels")}
        params = self.params(request.config_key, student_tuned)
        shape = NetShape(
            game.obs_shape,
            game.num_actions,
            request.blocks,
            request.channels,
            teacher.shape.value_hidden,
            game.num_players,
        )
        student = new_net(shape, request.seed)
        targets = teacher_targets(teacher, window, request.value_mix)
        steps = request.steps if request.steps is not None else params.train_steps
        carry: dict[str, object] = {"distilled_from": teacher_sha, "value_mix": request.value_mix}
        if student_tuned:
            carry[TUNED_KEY] = student_tuned
        result = train_net(
            student,
            targets,
            params=params,
            steps=steps,
            output=request.output,
            config_key=request.config_key,
            # Resuming needs the same data and the same teacher: both name the checkpoint.
            window_sha256=f"{file_sha256(request.window)}:{teacher_sha}",
            device=self.settings.device,
            seed=request.seed,
            progress=progress,
            carry=carry,
        )
        counts = {
            "steps": result.step,
            "steps_run": result.steps_run,
            "samples": result.samples,
            "loss": result.loss,
            "parameters": parameter_count(student),
            "teacher_parameters": parameter_count(teacher),
            "blocks": request.blocks,
            "channels": request.channels,
            **result.diagnostics,
        }
        return self._evidence("distill", request.config_key, request.output, FileKind.MODEL, counts=counts, began=began)

    def _chooser(self, game: Game, params: AlphaZeroParams, player: Player, rng: np.random.Generator) -> MoveChooser:
        if player.kind == "random":
            return random_chooser(game, rng)
        if player.kind == "mcts":
            search = SearchConfig(params.baseline_simulations, params.c_puct)
            return search_chooser(BatchedMCTS(game, self._rollouts(game, params, rng), search, rng), rng)
        if player.kind == "mctsbot":
            return mctsbot_chooser(game, player.simulations, rng)
        if player.model is None:
            raise WorkloadError("a model player needs a model file")
        net, _ = self.load_or_new(game, player.model, 0)
        search = SearchConfig(params.eval_simulations, params.c_puct, gumbel=gumbel_of(params))
        leaves = network_leaves(game, self.evaluator(net))
        return search_chooser(BatchedMCTS(game, leaves, search, rng), rng, reuse=params.tree_reuse)

    @staticmethod
    def _rollouts(game: Game, params: AlphaZeroParams, rng: np.random.Generator) -> LeafEvaluator:
        """The pure-MCTS baseline's leaf evaluator: random playouts, cut off like selfplay's games when capped."""
        cap = params.baseline_rollout_moves
        cut_off = truncation_values(game) if cap > 0 else None
        return rollout_leaves(game, params.baseline_rollouts, rng, max_moves=cap, cut_off=cut_off)

    @staticmethod
    def _evidence(
        operation: Operation,
        config_key: str,
        output: Path,
        kind: FileKind,
        *,
        counts: Mapping[str, float],
        began: _Began,
    ) -> Evidence:
        described = OutputFile.describe(output, kind)
        elapsed = time.perf_counter() - began.wall
        # The CPU this process (all its threads) spent on the operation: what the job cost the machine.
        counts = {**counts, "cpu_s": round(time.process_time() - began.cpu, 3)}
        log.info(
            "%s %s wrote %s (%d bytes) in %.1f s: %s",
            operation,
            config_key,
            output,
            described.size_bytes,
            elapsed,
            counts,
        )
        return Evidence(operation, config_key, (described,), counts, elapsed)


@dataclass(frozen=True)
class _Began:
    """When an operation started: wall clock and this process's CPU time (seconds)."""

    wall: float
    cpu: float

    @classmethod
    def now(cls) -> _Began:
        return cls(time.perf_counter(), time.process_time())


def gumbel_of(params: AlphaZeroParams) -> GumbelConfig | None:
    """The Gumbel root configuration when `params.gumbel` is on, else None (PUCT at the root)."""
    if not params.gumbel:
        return None
    return GumbelConfig(params.gumbel_considered, params.gumbel_c_visit, params.gumbel_c_scale)


def _write_json(path: Path, data: dict[str, object]) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def train_steps(request: TrainRequest, params: AlphaZeroParams) -> int:
    """Optimizer steps for `request`: its `steps`, else ceil(`rows` / the batch size), else `train_steps`."""
    if request.steps is not None:
        return request.steps
    if request.rows is not None:
        return max(1, math.ceil(request.rows / params.train_batch_size))
    return params.train_steps
