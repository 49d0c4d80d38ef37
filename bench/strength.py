"""How strong does the quickstart get, per CPU second? Judged by a yardstick nobody here wrote.

Runs `zeroloop quickstart` from nothing in a fresh data directory and measures the CPU
time (user + system) of its whole process tree: the quickstart, its workers and every
child they start. Where this machine lets root make a control group (cgroup v1 cpuacct
or cgroup v2), the quickstart starts in one of its own and the kernel counts every
process in it exactly, detached workers and short-lived children included; elsewhere
psutil reads the processes whose environment carries the data directory every
`--sample-s` seconds, which misses what a process spends between its last reading and
its exit (it counted 1,802 CPU-s where the jobs' own records held 2,522 in one run). At
each checkpoint of that CPU time (`--cpu-checkpoints`, seconds, cumulative) the
quickstart is stopped (Ctrl-C: it drains; its drain counts too), and the production
model at that moment plays OpenSpiel's own `MCTSBot` (its C++ bot, pyspiel.MCTSBot, the
same search as open_spiel.python.algorithms.mcts at about a sixteenth of the CPU, which
judged rounds 1 to 4 in docs/workload.md: uct_c 2, `--bot-simulations` simulations, one
random rollout per leaf, solve=True) for
`--games` games, alternating colours (game i: the model is player i mod n), every game
played from the first move, the model playing its most visited move with the workload's
evaluation search (`eval_simulations`, or `--model-simulations`). Then the quickstart resumes
from the store. CPU time rather than wall time, so a busy machine does not distort the curve.
Each side's CPU-seconds per move print beside the score: the bot's, and the model's, whose
games are searched in lockstep (one batched forward pass per simulation for every game
still running), so its figure is its share of a batch; alone, one game's search pays the
whole per-call cost of each forward pass (about eight times the batched figure at 800
simulations here).

Each checkpoint prints the CPU and wall seconds so far, the model, its score against the
bot (and by seat) with a 95% interval and the Elo it implies, its joint rating (random
play = 0) as the registry shows it, and where the quickstart's CPU went by job type:
selfplay, export, training, gating matches (against the production model), baseline
matches, tournament matches, and the rest (the coordinator, the workers' own processes,
the dashboard), from the `cpu_s` every job's evidence records.

    python -m bench.strength --game connect_four --cpu-checkpoints 900 1800 3600 --bot-simulations 1000 --games 100
    python -m bench.strength --game tic_tac_toe --cpu-checkpoints 300 --bot-simulations 1000 --games 100 --exhaustive
    python -m bench.strength --game chinese_checkers_3p --cpu-checkpoints 3600 --bot-simulations 200 --games 60
    python -m bench.strength --game tic_tac_toe --cpu-checkpoints 60 --bot-simulations 50 --games 10   # a smoke run
    python -m bench.strength --game connect_four --judge --data-dir DIR --model-simulations 800 [--model ID]

`--judge` with the `--data-dir` of an earlier run plays its production model (or `--model`)
again without running the quickstart, e.g. with another search.

With n players, the model takes one seat and a bot every other seat, and the score is
pairwise (the model against each bot seat: win when its return is higher, a draw when
equal), so its fair share is one half. With `--exhaustive` each checkpoint also walks
every line of opponent moves against the network's policy alone (no search;
zeroloop.workload.exhaustive) and prints how many it loses.

With `--tune`, two runs of equal budget go side by side, each in a fresh data directory,
at the same time: the default quickstart, and a tune (`zeroloop tune start KEY
--variants V --budget-cpu-s B`) whose quickstart has the config key's own pipeline paused,
so the whole tree's CPU goes to the population's variants. Each run stops when its tree
has used the (one) `--cpu-checkpoints` budget; the tune's best variant is then adopted
(`zeroloop tune adopt KEY`, as a user would), and both production models play the bot,
the two matches at once, each in `--match-processes` / 2 processes (game i is the same
game whichever process plays it). Both figures print, with Wilson's interval on the
score beside the Elo's, then the tune's table of what it tried. `--judge` with the
`--data-dir` of an earlier `--tune` plays its two production models again (more games,
more processes) without running anything.

    python -m bench.strength --tune --game connect_four --cpu-checkpoints 600 --variants 2 \
        --bot-simulations 1000 --games 100 --match-processes 8
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import sqlalchemy as sa

from zeroloop.app import App
from zeroloop.config import load_settings
from zeroloop.control.actions import set_paused
from zeroloop.errors import TuneError
from zeroloop.pipeline.ratings import ratings
from zeroloop.pipeline.registry import ModelRegistry
from zeroloop.store.queries import pipelines as pipeline_queries
from zeroloop.store.schema import jobs as jobs_table
from zeroloop.tune import manager as tune_manager
from zeroloop.workload import exhaustive
from zeroloop.workload.alphazero import AlphaZeroWorkload
from zeroloop.workload.elo import elo_estimate
from zeroloop.workload.games import State
from zeroloop.workload.match import mctsbot, search_chooser
from zeroloop.workload.mcts import BatchedMCTS, SearchConfig, network_leaves


class TreeCpu:
    """CPU seconds (user + system) of every process of one quickstart, sampled (the fallback of `CgroupCpu`).

    The quickstart's workers are launched detached (the local provider double-forks them),
    so they are not its descendants; they, and every child they start, carry the
    quickstart's ZEROLOOP_DATA_DIR in their environment, which is how they are found.
    The bench's own process is left out.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = str(data_dir)
        self.seen: dict[tuple[int, float], float] = {}  # (pid, start time) -> last CPU seconds read
        self.strangers: set[tuple[int, float]] = set()  # processes of someone else

    def _ours(self, process: psutil.Process, key: tuple[int, float]) -> bool:
        if key in self.seen:
            return True
        if key in self.strangers or process.pid == os.getpid():
            return False
        if process.environ().get("ZEROLOOP_DATA_DIR") == self.data_dir:
            return True
        self.strangers.add(key)
        return False

    def sample(self) -> float:
        """Read every live process of the quickstart; return the total, keeping what exited ones last showed."""
        for process in psutil.process_iter():
            try:
                with process.oneshot():
                    key = (process.pid, process.create_time())
                    if self._ours(process, key):
                        times = process.cpu_times()
                        self.seen[key] = times.user + times.system
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue  # gone, or not ours to read: an exited process's last reading stands
        return sum(self.seen.values())


class CgroupCpu:
    """CPU seconds of every process in a control group of the quickstart's own, counted by the kernel.

    `join` (run in the child before it executes the quickstart) puts it in the group; whatever it
    starts stays there, detached or not. `make` returns None where no group can be made here."""

    def __init__(self, path: Path, version: int) -> None:
        self.path, self.version = path, version

    @staticmethod
    def make(name: str) -> CgroupCpu | None:
        """A new group named `name` under a writable cpuacct (v1) or cgroup2 mount, or None."""
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
        roots = [(Path(m[1]), 1) for m in mounts if m[2] == "cgroup" and "cpuacct" in m[3].split(",")]
        roots += [(Path(m[1]), 2) for m in mounts if m[2] == "cgroup2"]
        for root, version in roots:
            try:
                (root / name).mkdir()
            except OSError:
                continue
            group = CgroupCpu(root / name, version)
            try:
                group.sample()
            except OSError:
                group.remove()
                continue
            return group
        return None

    def join(self) -> None:
        """Put the calling process in the group."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def sample(self) -> float:
        """The group's CPU seconds so far (user + system)."""
        if self.version == 1:
            return int((self.path / "cpuacct.usage").read_text()) / 1e9
        stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines())
        return int(stat["usage_usec"]) / 1e6

    def remove(self) -> None:
        """Remove the group (once its processes are gone; a group still in use is left, with a word)."""
        try:
            self.path.rmdir()
        except OSError as exc:
            print(f"(the control group {self.path} is left: {exc})", file=sys.stderr)


def quickstart_until(
    data_dir: Path, game: str, workers: int, cpu_s: float, sample_s: float, extra_env: dict[str, str] | None = None
) -> tuple[float, float]:
    """Run the quickstart (resuming what is in `data_dir`) until its tree has used `cpu_s` CPU seconds.

    Returns the CPU seconds the tree used, the drain after Ctrl-C included, and the wall seconds.
    """
    env = {**os.environ, "ZEROLOOP_DATA_DIR": str(data_dir), "COLUMNS": "120", **(extra_env or {})}
    log = data_dir.parent / "quickstart.log"
    began = time.monotonic()
    with log.open("ab") as output:
        command = [sys.executable, "-m", "zeroloop", "quickstart", "--game", game, "--minutes", "100000"]
        group = CgroupCpu.make(f"zeroloop-strength-{os.getpid()}-{time.monotonic_ns()}")
        process = subprocess.Popen(
            [*command, "--workers", str(workers)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            preexec_fn=group.join if group else None,  # noqa: PLW1509  (it only writes its pid to the group)
        )
        tree: CgroupCpu | TreeCpu = group or TreeCpu(data_dir)
        used = 0.0
        try:
            while process.poll() is None and used < cpu_s:
                time.sleep(sample_s)  # a sampling period, not a wait for an event
                used = tree.sample()
        finally:  # at the checkpoint, and when the bench itself is interrupted or terminated: stop the tree
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                while process.poll() is None:
                    time.sleep(sample_s)
                    used = tree.sample()
            if group is not None:
                group.remove()
        if process.returncode not in (0, 130, -signal.SIGINT):
            raise SystemExit(f"the quickstart exited with {process.returncode}: see {log}")
    return used, time.monotonic() - began


def play_bots(
    workload: AlphaZeroWorkload,
    config_key: str,
    model: Path,
    bot_simulations: int,
    games: int,
    seed: int = 0,
    first: int = 0,
    simulations: int | None = None,
) -> dict[str, Any]:
    """The model against MCTSBot in every other seat, `games` games in lockstep (the model's searches batched).

    The games are numbers `first` .. `first + games - 1` of a series (game i: the model is player
    i mod n, its bots seeded by i), so a series split into parts plays the same games. The model
    searches `simulations` per move (default: the workload's `eval_simulations`).
    Returns pairwise wins, draws and losses overall and by the model's seat, and each side's CPU
    time and move count (the model's moves are searched in batches; its time is shared evenly).
    """
    game = workload.game(config_key)
    params = workload.params(config_key)
    net, _ = workload.load_or_new(game, model, 0)
    rng = np.random.default_rng(seed)
    search = SearchConfig(params.eval_simulations if simulations is None else simulations, params.c_puct)
    choose = search_chooser(BatchedMCTS(game, network_leaves(game, workload.evaluator(net)), search, rng), rng)
    n = game.num_players
    bots = {g: mctsbot(game, bot_simulations, seed + 2 * g) for g in range(first, first + games)}
    states: dict[int, State] = {g: game.new_state() for g in range(first, first + games)}
    by_seat: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    spent = {"model": 0.0, "bot": 0.0}
    moves = {"model": 0, "bot": 0}
    for _ in range(game.max_length + 1):
        if not states:
            break
        ours = [g for g, state in states.items() if game.to_play(state) == g % n]
        if ours:
            began = time.process_time()
            chosen = choose([states[g] for g in ours], [False] * len(ours))
            spent["model"] += time.process_time() - began
            moves["model"] += len(ours)
            for g, action in zip(ours, chosen, strict=True):
                game.apply(states[g], action)
        for g, state in states.items():
            if g not in ours and not game.is_terminal(state):
                began = time.process_time()
                action = int(bots[g].step(state))
                spent["bot"] += time.process_time() - began
                moves["bot"] += 1
                game.apply(state, action)
        for g in [g for g, state in states.items() if game.is_terminal(state)]:
            returns = game.returns(states.pop(g))
            mine = returns[g % n]
            seat_tally = by_seat[g % n]
            for seat, theirs in enumerate(returns):
                if seat != g % n:
                    seat_tally[0 if mine > theirs else 1 if mine == theirs else 2] += 1
    return {**tally(dict(by_seat)), "cpu_s": spent, "moves": moves}


def tally(by_seat: dict[int, list[int]]) -> dict[str, Any]:
    """Wins, draws and losses overall and by seat, from [wins, draws, losses] per seat."""
    wins, draws, losses = (sum(t[i] for t in by_seat.values()) for i in range(3))
    seats = {
        seat: {"wins": t[0], "draws": t[1], "losses": t[2], "score": round((t[0] + t[1] / 2) / max(sum(t), 1), 3)}
        for seat, t in sorted(by_seat.items())
    }
    return {"wins": wins, "draws": draws, "losses": losses, "by_seat": seats}


def play_part(
    data_dir: Path,
    config_key: str,
    model: Path,
    bot_simulations: int,
    first: int,
    games: int,
    simulations: int | None = None,
) -> tuple[dict[str, Any], float]:
    """Games `first` .. `first + games - 1` of a series against the bot, in a process of their own; and their CPU-s."""
    os.environ["ZEROLOOP_DATA_DIR"] = str(data_dir)
    workload = AlphaZeroWorkload(load_settings().workload.model_copy(update={"torch_threads": 1}))
    began = time.process_time()
    result = play_bots(workload, config_key, model, bot_simulations, games, first=first, simulations=simulations)
    return result, time.process_time() - began


def cpu_by_job(data_dir: Path, total_cpu_s: float) -> dict[str, float]:
    """CPU-seconds of the quickstart's finished jobs by kind, from each job's recorded `cpu_s`; the rest is
    everything else in its tree (the coordinator, the workers' own processes, the dashboard, jobs cut off)."""
    os.environ["ZEROLOOP_DATA_DIR"] = str(data_dir)
    spent: dict[str, float] = defaultdict(float)
    with App(load_settings(), source="bench") as app, app.store.read() as conn:
        rows = conn.execute(sa.select(jobs_table.c.type, jobs_table.c.payload, jobs_table.c.result)).all()
    for job_type, payload, result in rows:
        counts = (result or {}).get("counts") or {}
        if "cpu_s" not in counts:
            continue
        kind = job_type
        if job_type == "evaluate":
            purpose = (payload or {}).get("purpose", "gate")
            opponent = (payload or {}).get("opponent_kind", "model")
            kind = "tournament" if purpose == "tournament" else "gating" if opponent == "model" else "baseline"
        spent[kind] += float(counts["cpu_s"])
    spent["rest"] = total_cpu_s - sum(spent.values())
    return {kind: round(seconds) for kind, seconds in sorted(spent.items())}


def evaluate(
    data_dir: Path,
    config_key: str,
    bot_simulations: int,
    games: int,
    *,
    exhaustive_check: bool = False,
    simulations: int | None = None,
    model_id: str | None = None,
) -> dict[str, object]:
    """Play the production model (or `model_id`) against MCTSBot; its score, Elo and joint rating."""
    os.environ["ZEROLOOP_DATA_DIR"] = str(data_dir)
    settings = load_settings()
    workload_settings = settings.workload.model_copy(update={"torch_threads": 1})
    workload = AlphaZeroWorkload(workload_settings)
    with App(settings, source="bench") as app:
        registry = ModelRegistry(app.store, app.bus)
        production = registry.production(config_key) if model_id is None else registry.get(model_id)
        if production is None:
            return {"model": None}
        with app.store.read() as conn:
            joint = ratings(conn, [production.id], 0.95)[production.id]
        model_path = app.artifacts.fetch(production.artifact_sha256)
        began = time.process_time()
        result = play_bots(workload, config_key, model_path, bot_simulations, games, simulations=simulations)
        unbeaten = None
        if exhaustive_check:  # the policy alone, against every line of opponent moves
            game = workload.game(config_key)
            found = exhaustive.check(game, exhaustive.network_policy(game, model_path))
            unbeaten = {"lines": found.lines, "lost": found.lost, "drawn": found.drawn, "first_loss": found.first_loss}
    return {
        **figures(production.id, result, str(joint), time.process_time() - began),
        **({"policy_alone_every_line": unbeaten} if unbeaten else {}),
    }


def figures(model_id: str, result: dict[str, Any], joint: str, match_cpu_s: float) -> dict[str, Any]:
    """A match's score with its 95% intervals (Elo's, and Wilson's on the score), and the Elo it implies."""
    wins, draws, losses = int(result["wins"]), int(result["draws"]), int(result["losses"])
    estimate = elo_estimate(wins, draws, losses, 0.95)
    return {
        "model": model_id,
        "games": wins + draws + losses,
        "wins": wins,
        "draws": draws,
        "losses": losses,
        "score": round(estimate.score, 3),
        "score_95": [round(_score(estimate.low), 3), round(_score(estimate.high), 3)],
        "score_wilson_95": [round(bound, 3) for bound in wilson(estimate.score, wins + draws + losses)],
        "elo_vs_bot": round(estimate.elo),
        "elo_95": [round(estimate.low), round(estimate.high)],
        "by_seat": result["by_seat"],
        "joint_rating": joint,
        "match_cpu_s": round(match_cpu_s, 1),
        **({"cpu_s_per_move": per_move(result["cpu_s"], result["moves"])} if "cpu_s" in result else {}),
    }


def per_move(cpu_s: dict[str, float], moves: dict[str, int]) -> dict[str, float]:
    """Each side's CPU-seconds per move it played: what the model's search costs beside the bot's."""
    return {side: round(cpu_s[side] / moves[side], 4) if moves[side] else 0.0 for side in cpu_s}


def wilson(score: float, games: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson's 95% score interval for a share `score` of `games` (a draw counts half a win)."""
    if games == 0:
        return (0.0, 1.0)
    centre = (score + z * z / (2 * games)) / (1 + z * z / games)
    half = z * np.sqrt(score * (1 - score) / games + z * z / (4 * games * games)) / (1 + z * z / games)
    return (max(0.0, centre - half), min(1.0, centre + half))


def production_of(data_dir: Path, config_key: str) -> tuple[str, Path, str] | None:
    """The production model of `config_key` in `data_dir`'s store: its id, its file and its joint rating."""
    os.environ["ZEROLOOP_DATA_DIR"] = str(data_dir)
    with App(load_settings(), source="bench") as app:
        production = ModelRegistry(app.store, app.bus).production(config_key)
        if production is None:
            return None
        with app.store.read() as conn:
            joint = ratings(conn, [production.id], 0.95)[production.id]
        return production.id, app.artifacts.fetch(production.artifact_sha256), str(joint)


def _score(elo: float) -> float:
    return 1.0 / (1.0 + 10.0 ** (-elo / 400.0)) if np.isfinite(elo) else float(elo > 0)


def start_tune(data_dir: Path, config_key: str, variants: int, budget_cpu_s: float) -> int:
    """In a fresh store: the config key's pipeline, paused by hand (its CPU goes to the variants), and a tune of it."""
    os.environ["ZEROLOOP_DATA_DIR"] = str(data_dir)
    with App(load_settings(), source="bench") as app:
        with app.store.transaction() as conn:
            pipeline_queries.ensure_pipeline(conn, config_key, time.time())
        set_paused(app, config_key, True)
        return tune_manager.start(app, config_key, variants=variants, budget_cpu_s=budget_cpu_s)


def adopt_best(data_dir: Path, config_key: str) -> dict[str, Any]:
    """`zeroloop tune adopt KEY`: the best variant's model becomes the config key's production model."""
    os.environ["ZEROLOOP_DATA_DIR"] = str(data_dir)
    with App(load_settings(), source="bench") as app:
        return tune_manager.adopt(app, config_key)


def tune_table(data_dir: Path, config_key: str) -> str:
    """What `zeroloop tune show KEY` prints for the tune's data directory."""
    env = {**os.environ, "ZEROLOOP_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    shown = subprocess.run(
        [sys.executable, "-m", "zeroloop", "tune", "show", config_key],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return shown.stdout + shown.stderr


def compare_tune(args: argparse.Namespace, config_key: str, root: Path) -> None:
    """The default quickstart and a tune, equal CPU budgets side by side; both final models against the bot."""
    budget = max(args.cpu_checkpoints)
    dirs = {"default": root / "default" / "data", "tune": root / "tune" / "data"}
    if args.judge:  # the runs are done (an earlier --tune into the same --data-dir): play their models only
        judge(args, config_key, dirs, {})
        return
    for data_dir in dirs.values():
        data_dir.mkdir(parents=True, exist_ok=True)
    tune_id = start_tune(dirs["tune"], config_key, args.variants, budget)
    print(
        f"{config_key}: the default quickstart and tune {tune_id} ({args.variants} variants), "
        f"{budget:.0f} CPU-seconds of each tree, side by side (data in {root})",
        flush=True,
    )
    ports = {"default": "8811", "tune": "8812"}  # two dashboards at once; each falls back to a free port anyway
    with ThreadPoolExecutor(max_workers=2) as threads:
        runs = {
            name: threads.submit(
                quickstart_until,
                data_dir,
                args.game,
                args.workers,
                budget,
                args.sample_s,
                {"ZEROLOOP_SERVER__PORT": ports[name]},
            )
            for name, data_dir in dirs.items()
        }
        spent = {name: run.result() for name, run in runs.items()}
    for name, (cpu_s, wall_s) in spent.items():
        print(f"{name}: {cpu_s:.0f} CPU s of its tree ({wall_s:.0f} s wall)", flush=True)
        print(f"  CPU-seconds by job type: {json.dumps(cpu_by_job(dirs[name], cpu_s))}", flush=True)
    try:
        print(f"tune: adopted {json.dumps(adopt_best(dirs['tune'], config_key), default=str)}", flush=True)
    except TuneError as exc:  # a tune with no rated variant has nothing to adopt: say so, and judge what is there
        print(f"tune: nothing adopted: {exc}", flush=True)
    judge(args, config_key, dirs, {name: cpu_s for name, (cpu_s, _wall_s) in spent.items()})


def judge(args: argparse.Namespace, config_key: str, dirs: dict[str, Path], spent: dict[str, float]) -> None:
    """Both production models against the bot at once, each model's games split over processes; the tune's table."""
    models = {name: production_of(data_dir, config_key) for name, data_dir in dirs.items()}
    parts = max(1, args.match_processes // 2)
    bounds = [(args.games * i // parts, args.games * (i + 1) // parts) for i in range(parts)]
    with ProcessPoolExecutor(max_workers=2 * parts, mp_context=get_context("spawn")) as processes:
        matches = {
            name: [
                processes.submit(
                    play_part,
                    dirs[name],
                    config_key,
                    model[1],
                    args.bot_simulations,
                    low,
                    high - low,
                    args.model_simulations,
                )
                for low, high in bounds
            ]
            for name, model in models.items()
            if model is not None
        }
        for name, model in models.items():
            if model is None:
                print(f"{name}: no production model", flush=True)
                continue
            by_seat: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
            match_cpu_s = 0.0
            sides_cpu_s = {"model": 0.0, "bot": 0.0}
            sides_moves = {"model": 0, "bot": 0}
            for part in matches[name]:
                result, used = part.result()
                match_cpu_s += used
                for seat, counts in result["by_seat"].items():
                    for i, what in enumerate(("wins", "draws", "losses")):
                        by_seat[seat][i] += counts[what]
                for side in sides_cpu_s:
                    sides_cpu_s[side] += result["cpu_s"][side]
                    sides_moves[side] += result["moves"][side]
            merged = {**tally(dict(by_seat)), "cpu_s": sides_cpu_s, "moves": sides_moves}
            after = f"after {spent[name]:.0f} CPU s" if name in spent else "(judged afresh)"
            print(
                f"{name} {after}, vs MCTSBot-{args.bot_simulations}: "
                f"{json.dumps(figures(model[0], merged, model[2], match_cpu_s))}",
                flush=True,
            )
    print(tune_table(dirs["tune"], config_key), flush=True)


def positive(text: str) -> int:
    """An argument that is a whole number of at least 1 (argparse names the option when this refuses)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def main() -> None:
    """Parse arguments, run to each CPU checkpoint, print one line per checkpoint."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--game", default="connect_four")
    parser.add_argument(
        "--cpu-checkpoints",
        type=float,
        nargs="+",
        default=[900.0, 1800.0, 3600.0],
        help="CPU seconds of the quickstart's process tree, cumulative",
    )
    parser.add_argument("--bot-simulations", type=int, default=1000, help="simulations of OpenSpiel's MCTSBot")
    parser.add_argument("--games", type=int, default=100, help="games per checkpoint, alternating colours")
    parser.add_argument(
        "--model-simulations",
        type=positive,
        default=None,
        help="the model's search per move against the bot (default: the workload's eval_simulations); each "
        "side's CPU-seconds per move print beside the score",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sample-s", type=float, default=0.5, help="how often the CPU time is read (seconds)")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a fresh temporary directory")
    parser.add_argument(
        "--exhaustive",
        action="store_true",
        help="also play the network's policy alone (no search) against every line of opponent moves (tic-tac-toe)",
    )
    parser.add_argument(
        "--tune",
        action="store_true",
        help="the default quickstart against a tune of equal CPU budget (the largest --cpu-checkpoints), side by side",
    )
    parser.add_argument("--variants", type=int, default=3, help="the tune's population (with --tune)")
    parser.add_argument(
        "--judge",
        action="store_true",
        help="with the --data-dir of an earlier run: play its production model (or --model) only; with --tune, "
        "its two production models",
    )
    parser.add_argument("--model", default=None, help="with --judge (not --tune): the model id to play")
    parser.add_argument(
        "--match-processes",
        type=int,
        default=2,
        help="processes that play the two models' games at once (with --tune; each model's games split evenly)",
    )
    args = parser.parse_args()
    # Terminated, the bench unwinds like an interrupt: the quickstart it runs is stopped, not left behind.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    config_key = args.game if args.game.endswith("p") and args.game[-2].isdigit() else f"{args.game}_2p"
    if args.judge and not args.data_dir:
        parser.error("--judge needs the --data-dir of an earlier run")
    if args.model and (args.tune or not args.judge):
        parser.error("--model names the model --judge plays (without --tune)")
    if args.tune:
        root = args.data_dir or Path(tempfile.mkdtemp(prefix="zeroloop-strength-tune-"))
        compare_tune(args, config_key, root)
        return
    if args.judge:  # an earlier run's model, played again (more games, another search) without running anything
        figures = evaluate(
            args.data_dir,
            config_key,
            args.bot_simulations,
            args.games,
            exhaustive_check=args.exhaustive,
            simulations=args.model_simulations,
            model_id=args.model,
        )
        print(f"judged afresh, vs MCTSBot-{args.bot_simulations}: {json.dumps(figures)}", flush=True)
        return
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="zeroloop-strength-")) / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    cpu_s = wall_s = 0.0
    print(f"strength of {config_key} per CPU second (data in {data_dir}; quickstart log beside it)", flush=True)
    for checkpoint in sorted(args.cpu_checkpoints):
        if checkpoint > cpu_s:
            used, wall = quickstart_until(data_dir, args.game, args.workers, checkpoint - cpu_s, args.sample_s)
            cpu_s, wall_s = cpu_s + used, wall_s + wall
        figures = evaluate(
            data_dir,
            config_key,
            args.bot_simulations,
            args.games,
            exhaustive_check=args.exhaustive,
            simulations=args.model_simulations,
        )
        print(
            f"after {cpu_s:.0f} CPU s ({wall_s:.0f} s wall) of quickstart, vs MCTSBot-{args.bot_simulations}: "
            f"{json.dumps(figures)}",
            flush=True,
        )
        print(f"  CPU-seconds by job type: {json.dumps(cpu_by_job(data_dir, cpu_s))}", flush=True)


if __name__ == "__main__":
    main()
