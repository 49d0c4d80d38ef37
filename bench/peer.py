"""A peer beside zeroloop: OpenSpiel's own AlphaZero, given the same CPU-seconds, judged by the same yardstick.

Trains OpenSpiel's Python AlphaZero (open_spiel 2.0.2,
`open_spiel.python.algorithms.alpha_zero.alpha_zero`: JAX, flax nnx, optax) from nothing on the
same game for `--cpu-s` CPU-seconds, then plays its latest checkpoint against OpenSpiel's
`MCTSBot` exactly as `bench.strength` plays zeroloop's production model, and prints the same
figures (`bench.strength.figures`), so the two scores can stand side by side.

The peer runs in an environment of its own (`--peer-python`, a separate venv with open_spiel,
jax, flax, optax and chex; CPU jax), never in the project's: this module imports nothing of
it, and writes two small scripts into the data directory that the peer's Python runs,
`peer_train.py` and `peer_judge.py`. Make the environment once:

    python3 -m venv /work/peer-venv
    /work/peer-venv/bin/pip install open_spiel==2.0.2 jax flax optax chex

Training: OpenSpiel's learner with its actors (spawned processes; no evaluators) starts in a
control group of its own (`bench.strength.CgroupCpu`), so the kernel counts the CPU time (user
+ system) of every process in its tree; where no group can be made, psutil samples the
processes that carry the run's directory in their environment (`bench.strength.TreeCpu`).
Every `--sample-s` seconds the CPU time is read; once it reaches `--cpu-s` the learner gets
Ctrl-C (it tells its actors to stop after their current game), and after `--grace-s` wall
seconds every process left in the tree is killed. The drain counts. The config is sized for a
2-core CPU (`PEER_CONFIG`; `--peer-config` overrides any `alpha_zero.Config` field, JSON): 2
actors, a 2x256 MLP (OpenSpiel's nnx inference runs eagerly, one state at a time, ~5 ms of CPU
whatever the width, so a resnet costs 5-6x more per simulation), 100 simulations per move in
self-play, a learn step every 256 new states, each JAX process on one thread. The learner
writes `checkpoint--1` (its latest) every step and `checkpoint-N` every `checkpoint_freq` steps.

Judging: the latest checkpoint the learner logged as saved plays `--games` games against
OpenSpiel's C++ bot, `pyspiel.MCTSBot(game, RandomRolloutEvaluator(1, 2i), 2.0,
--bot-simulations, 1000 MB, solve=True, seed 2i + 1)` for game i (as `bench.strength` plays it;
round 4's peer figure in docs/workload.md was judged by the Python bot, the same search), the
peer being player i mod 2, every game from the first move. The peer is OpenSpiel's
`MCTSBot` over its `AlphaZeroEvaluator` with `--peer-simulations` simulations, PUCT with the
training run's uct_c, no noise, solve=False, playing its most visited move. Wins, draws and
losses by seat and each side's CPU-seconds per move (process time around each bot's step)
print as JSON, the games split over
`--judge-processes` processes (game i is the same game whichever process plays it).

    python -m bench.peer --game connect_four --cpu-s 1800 --peer-python /work/peer-venv/bin/python \\
        --data-dir /tmp/peer-c4 --bot-simulations 1000 --games 100 --peer-simulations 800
    python -m bench.peer --judge --data-dir /tmp/peer-c4 --bot-simulations 1000 --games 100 --peer-simulations 800
    python -m bench.peer --cpu-s 120 --games 4 --bot-simulations 100 --peer-simulations 50 --data-dir /tmp/peer-smoke
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.strength import CgroupCpu, TreeCpu, figures, tally

# OpenSpiel's alpha_zero.Config for a 2-core CPU (game and path are added; the shapes are the game's).
PEER_CONFIG: dict[str, Any] = {
    "learning_rate": 1e-3,
    "weight_decay": 1e-4,
    "decouple_weight_decay": False,
    "train_batch_size": 128,
    "replay_buffer_size": 2**11,
    "replay_buffer_reuse": 8,  # a learn step every 2048 // 8 = 256 new states (~10 games), 16 batches once full
    "max_steps": 0,  # train until stopped
    "checkpoint_freq": 5,  # checkpoint-N kept every 5 steps; checkpoint--1 is rewritten every step
    "actors": 2,
    "evaluators": 0,
    "evaluation_window": 100,
    "eval_levels": 7,  # only sizes the learner's statistics (it divides by eval_levels - 1)
    "uct_c": 2.0,
    "max_simulations": 100,
    "policy_alpha": 1.0,
    "policy_epsilon": 0.25,
    "temperature": 1.0,
    "temperature_drop": 10,
    "nn_model": "mlp",
    "nn_width": 256,
    "nn_depth": 2,
    "observation_shape": None,
    "output_size": None,
    "verbose": False,
    "quiet": True,
    "nn_api_version": "nnx",
}

# Each peer process on one thread: three processes share two cores, and its eager inference gains nothing from more.
PEER_ENV = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}

TRAIN_SCRIPT = '''\
"""Train OpenSpiel's AlphaZero with the alpha_zero.Config fields in the JSON file named by argv[1]."""
import json
import sys

from open_spiel.python.algorithms.alpha_zero import alpha_zero
from open_spiel.python.utils import spawn


def main():
    with open(sys.argv[1]) as fields:
        config = alpha_zero.Config(**json.load(fields))
    alpha_zero.alpha_zero(config)


if __name__ == "__main__":  # the actors are spawned: they import this file again
    with spawn.main_handler():
        main()
'''

JUDGE_SCRIPT = '''\
"""Games FIRST .. FIRST+COUNT-1 of a series: a checkpoint of OpenSpiel's AlphaZero against MCTSBot; JSON."""
import json
import os
import sys
import time

import numpy as np
import pyspiel
from open_spiel.python.algorithms import mcts
from open_spiel.python.algorithms.alpha_zero import evaluator as evaluator_lib
from open_spiel.python.algorithms.alpha_zero import utils


def main():
    run_dir, checkpoint = sys.argv[1], int(sys.argv[2])
    bot_simulations, peer_simulations, first, count = (int(a) for a in sys.argv[3:7])
    began = time.process_time()
    with open(os.path.join(run_dir, "config.json")) as fields:
        config = json.load(fields)
    game = pyspiel.load_game(config["game"])
    model = utils.api_selector(config.get("nn_api_version", "nnx")).Model.build_model(
        config["nn_model"],
        config["observation_shape"],
        config["output_size"],
        config["nn_width"],
        config["nn_depth"],
        config["weight_decay"],
        config["learning_rate"],
        run_dir,
        decouple_weight_decay=config["decouple_weight_decay"],
    )
    model.load_checkpoint(checkpoint)
    evaluator = evaluator_lib.AlphaZeroEvaluator(game, model)
    by_seat = [[0, 0, 0], [0, 0, 0]]
    spent = {"model": 0.0, "bot": 0.0}
    moves = {"model": 0, "bot": 0}
    for i in range(first, first + count):
        seed = 2 * i
        # The yardstick as zeroloop's bench plays it (zeroloop.workload.match.mctsbot): OpenSpiel's C++ MCTSBot.
        rollouts = pyspiel.RandomRolloutEvaluator(1, seed)
        bot = pyspiel.MCTSBot(game, rollouts, 2.0, bot_simulations, 1000, True, seed + 1, False)
        peer = mcts.MCTSBot(  # as alpha_zero's evaluation bot: PUCT, no noise, no solver; its most visited move
            game,
            config["uct_c"],
            peer_simulations,
            evaluator,
            solve=False,
            random_state=np.random.RandomState(1_000_003 + i),  # only shuffles the order children are made in
            child_selection_fn=mcts.SearchNode.puct_value,
            dirichlet_noise=None,
            dont_return_chance_node=True,
        )
        seat = i % 2
        state = game.new_initial_state()
        while not state.is_terminal():
            side = "model" if state.current_player() == seat else "bot"
            tick = time.process_time()
            action = (peer if side == "model" else bot).step(state)
            spent[side] += time.process_time() - tick
            moves[side] += 1
            state.apply_action(action)
        mine, theirs = state.returns()[seat], state.returns()[1 - seat]
        by_seat[seat][0 if mine > theirs else 1 if mine == theirs else 2] += 1
        print(f"game {i}: peer is player {seat}, returns {state.returns()}", file=sys.stderr, flush=True)
    result = {"by_seat": by_seat, "cpu_s": spent, "moves": moves, "process_cpu_s": time.process_time() - began}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
'''


def members(tree: CgroupCpu | TreeCpu) -> list[psutil.Process]:
    """The live processes of the peer's tree (the group's, or those the sampler has seen)."""
    found: list[psutil.Process] = []
    if isinstance(tree, CgroupCpu):
        pids = [int(pid) for pid in (tree.path / "cgroup.procs").read_text().split()]
        for pid in pids:
            try:
                found.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                continue
        return found
    tree.sample()
    for pid, started in tree.seen:
        try:
            process = psutil.Process(pid)
            if process.create_time() == started and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.Error:
            continue
    return found


def train(args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    """Run OpenSpiel's AlphaZero until its tree has used `--cpu-s` CPU seconds; what it used and left."""
    data_dir = run_dir.parent
    config = {**PEER_CONFIG, **json.loads(args.peer_config), "game": args.game, "path": str(run_dir)}
    (data_dir / "peer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (data_dir / "peer_train.py").write_text(TRAIN_SCRIPT)
    env = {**os.environ, **PEER_ENV, "ZEROLOOP_DATA_DIR": str(run_dir)}  # the marker TreeCpu finds its tree by
    log = data_dir / "train.log"
    began = time.monotonic()
    group = CgroupCpu.make(f"zeroloop-peer-{os.getpid()}-{time.monotonic_ns()}")
    with log.open("ab") as output:
        process = subprocess.Popen(
            [args.peer_python, str(data_dir / "peer_train.py"), str(data_dir / "peer_config.json")],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=group.join if group else None,  # noqa: PLW1509  (it only writes its pid to the group)
        )
        tree: CgroupCpu | TreeCpu = group or TreeCpu(run_dir)
        used = 0.0
        crashed = False
        try:
            while process.poll() is None and used < args.cpu_s:
                time.sleep(args.sample_s)  # a sampling period, not a wait for an event
                used = tree.sample()
            crashed = process.poll() is not None
        finally:  # at the budget, and when the bench itself is interrupted or terminated: stop the whole tree
            if process.poll() is None:
                process.send_signal(signal.SIGINT)  # the learner stops its actors after their current game
                deadline = time.monotonic() + args.grace_s
                while process.poll() is None and time.monotonic() < deadline:
                    time.sleep(args.sample_s)
            for _ in range(100):  # whatever is left of the tree, the learner included
                left = members(tree)
                if not left:
                    break
                for member in left:
                    try:
                        member.kill()
                    except psutil.NoSuchProcess:
                        continue
                time.sleep(0.1)
            process.wait()
            used = tree.sample()
            if group is not None:
                group.remove()
    wall_s = time.monotonic() - began
    if crashed:
        raise SystemExit(f"OpenSpiel's AlphaZero exited with {process.returncode} after {used:.0f} CPU s: see {log}")
    checkpoint, step = latest_checkpoint(run_dir)
    trained = {"cpu_s": used, "wall_s": wall_s, "checkpoint": checkpoint, "step": step, **learner_totals(run_dir)}
    (data_dir / "peer_trained.json").write_text(json.dumps(trained, indent=2) + "\n")
    return trained


def latest_checkpoint(run_dir: Path) -> tuple[int, int]:
    """The latest checkpoint the learner logged as saved that is still there, and the learn step it holds.

    Orbax writes a checkpoint under a temporary name and renames it, so one that is there is whole."""
    saved: list[tuple[int, int]] = [(0, 0)]  # the initial checkpoint, step 0
    step = 0
    log = run_dir / "log-learner.txt"
    for line in log.read_text().splitlines() if log.exists() else []:
        if found := re.search(r"\] Step: (\d+)$", line):
            step = int(found[1])
        elif found := re.search(r"\] Checkpoint saved: (-?\d+)$", line):
            saved.append((int(found[1]), step))
    for checkpoint, at in reversed(saved):
        if (run_dir / f"checkpoint-{checkpoint}").is_dir():
            return checkpoint, at
    raise SystemExit(f"no checkpoint of OpenSpiel's AlphaZero in {run_dir}")


def learner_totals(run_dir: Path) -> dict[str, int]:
    """Learn steps, self-play games and states so far, from the learner's last JSON line."""
    lines = (run_dir / "learner.jsonl").read_text().splitlines() if (run_dir / "learner.jsonl").exists() else []
    if not lines:
        return {"learn_steps": 0, "games": 0, "states": 0}
    last = json.loads(lines[-1])
    return {"learn_steps": last["step"], "games": last["total_trajectories"], "states": last["total_states"]}


def judge(args: argparse.Namespace, run_dir: Path, checkpoint: int, step: int) -> dict[str, Any]:
    """The checkpoint against MCTSBot, the games split over processes; `bench.strength.figures` of the match."""
    script = run_dir.parent / "peer_judge.py"
    script.write_text(JUDGE_SCRIPT)
    env = {**os.environ, **PEER_ENV}
    parts = max(1, min(args.judge_processes, args.games))
    bounds = [(args.games * i // parts, args.games * (i + 1) // parts) for i in range(parts)]
    logs = [run_dir.parent / f"judge-{i}.log" for i in range(parts)]
    processes = []
    for (low, high), log in zip(bounds, logs, strict=True):
        command = [args.peer_python, str(script), str(run_dir), str(checkpoint)]
        numbers = [args.bot_simulations, args.peer_simulations, low, high - low]
        with log.open("w") as errors:
            processes.append(
                subprocess.Popen(
                    [*command, *map(str, numbers)], env=env, stdout=subprocess.PIPE, stderr=errors, text=True
                )
            )
    by_seat = {0: [0, 0, 0], 1: [0, 0, 0]}
    spent = {"model": 0.0, "bot": 0.0}
    moves = {"model": 0, "bot": 0}
    match_cpu_s = 0.0
    for process, log in zip(processes, logs, strict=True):
        output, _ = process.communicate()
        if process.returncode != 0 or not output.strip():
            raise SystemExit(f"the peer's judge exited with {process.returncode}: see {log}")
        part = json.loads(output.strip().splitlines()[-1])
        for seat, counts in enumerate(part["by_seat"]):
            by_seat[seat] = [a + b for a, b in zip(by_seat[seat], counts, strict=True)]
        for side in spent:
            spent[side] += part["cpu_s"][side]
            moves[side] += part["moves"][side]
        match_cpu_s += part["process_cpu_s"]
    merged = {**tally({seat: t for seat, t in by_seat.items() if sum(t)}), "cpu_s": spent, "moves": moves}
    return figures(f"openspiel-alpha_zero-step{step}", merged, "none (not in a zeroloop registry)", match_cpu_s)


def main() -> None:
    """Train the peer for the CPU budget (unless --judge), then judge its latest checkpoint; one line each."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--game", default="connect_four")
    parser.add_argument("--cpu-s", type=float, default=1800.0, help="CPU seconds of the peer's whole process tree")
    parser.add_argument("--peer-python", default="/work/peer-venv/bin/python", help="the peer environment's Python")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a fresh temporary directory")
    parser.add_argument("--bot-simulations", type=int, default=1000, help="simulations of OpenSpiel's MCTSBot")
    parser.add_argument("--games", type=int, default=100, help="games against the bot, alternating colours")
    parser.add_argument("--peer-simulations", type=int, default=800, help="the peer's search per move when judged")
    parser.add_argument("--judge", action="store_true", help="only judge the run in --data-dir (trains nothing)")
    parser.add_argument("--judge-processes", type=int, default=2, help="processes the games are split over")
    parser.add_argument("--peer-config", default="{}", help="JSON: alpha_zero.Config fields over PEER_CONFIG")
    parser.add_argument("--sample-s", type=float, default=1.0, help="how often the CPU time is read (seconds)")
    parser.add_argument("--grace-s", type=float, default=60.0, help="wall seconds from Ctrl-C to killing the tree")
    args = parser.parse_args()
    # Terminated, the bench unwinds like an interrupt: the peer's tree is stopped, not left behind.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.judge and not args.data_dir:
        parser.error("--judge needs the --data-dir of an earlier run")
    data_dir: Path = args.data_dir or Path(tempfile.mkdtemp(prefix="zeroloop-peer-"))
    run_dir = data_dir / "run"
    if args.judge:
        trained_file = data_dir / "peer_trained.json"
        trained = json.loads(trained_file.read_text()) if trained_file.exists() else {}
        checkpoint, step = latest_checkpoint(run_dir)
        after = f"after {trained['cpu_s']:.0f} CPU s" if trained else "(judged afresh)"
    else:
        if run_dir.exists():
            parser.error(f"{run_dir} exists: OpenSpiel's AlphaZero cannot resume; use --judge or a fresh --data-dir")
        data_dir.mkdir(parents=True, exist_ok=True)
        print(f"peer: OpenSpiel's AlphaZero on {args.game} for {args.cpu_s:.0f} CPU s (in {data_dir})", flush=True)
        trained = train(args, run_dir)
        checkpoint, step = trained["checkpoint"], trained["step"]
        print(
            f"peer trained: {trained['cpu_s']:.0f} CPU s ({trained['wall_s']:.0f} s wall), "
            f"{trained['learn_steps']} learn steps, {trained['games']} self-play games, {trained['states']} states; "
            f"latest checkpoint {run_dir / f'checkpoint-{checkpoint}'} (step {step})",
            flush=True,
        )
        after = f"after {trained['cpu_s']:.0f} CPU s ({trained['wall_s']:.0f} s wall)"
    result = judge(args, run_dir, checkpoint, step)
    print(f"peer (OpenSpiel AlphaZero) {after}, vs MCTSBot-{args.bot_simulations}: {json.dumps(result)}", flush=True)


if __name__ == "__main__":
    main()
