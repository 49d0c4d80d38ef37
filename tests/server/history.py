"""A store with a history to chart: three rounds of a pipeline driven through the real coordinator, on a fake clock.

Selfplay, export, train and evaluate jobs are claimed and completed on two nodes with the
evidence counts a workload reports; their outcome events go to the real coordinator (which
counts samples, enqueues each stage's jobs, records matches, applies the promotion gate and
promotes) and to the progress recorder; training reports its loss and parts per step; the
leader's readings are taken between steps. Round 1's model beats random and is promoted;
round 2's draws it evenly and is promoted by the non-inferiority gate although it did worse
against random, so the archived model outrates production (the case of issue 26); round
3's loses clearly and is rejected. Then a backlog of evaluate jobs waits and a node drains.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.helpers import FakeClock
from zeroloop.app import App
from zeroloop.artifacts.transfer import ArtifactKind
from zeroloop.cluster.nodes import NodeInfo, NodeStatus
from zeroloop.control.readings import Readings
from zeroloop.events.bus import Event
from zeroloop.pipeline import coordinator as coordinator_module
from zeroloop.pipeline import jobs
from zeroloop.pipeline import progress as progress_module
from zeroloop.pipeline.coordinator import PipelineCoordinator
from zeroloop.pipeline.progress import ProgressRecorder
from zeroloop.queue.jobs import JobStatus
from zeroloop.store.queries import artifacts as artifact_queries
from zeroloop.store.queries import events as event_queries
from zeroloop.store.queries import pipelines as pipeline_queries

KEY = "tic_tac_toe_2p"
START = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC
CPU_NODE, GPU_NODE = "cpu-1", "gpu-1"
CPU_PRICE, GPU_PRICE = 1.5, 4.0  # currency units per hour
SELFPLAY_GAMES, SELFPLAY_SAMPLES, SELFPLAY_CPU_S = 10, 60, 110.0  # per selfplay job
SELFPLAY_WAIT_S, SELFPLAY_RUN_S = 60.0, 120.0
# Each round's results against (production, random): round 1 has no production model.
RESULTS = {1: (None, (18, 1, 1)), 2: ((3, 15, 2), (9, 4, 7)), 3: ((1, 5, 14), (9, 5, 6))}


def export_counts(number: int) -> dict[str, float]:
    """What round `number`'s export reports (names as the AlphaZero workload's diagnostics give them)."""
    return {
        "samples": 960.0 * number, "source_samples": 120.0 * number, "symmetries": 8.0, "input_files": 2.0,
        "games": 20.0 * number, "length_mean": 6.0 + number, "length_p10": 5.0, "length_p50": 6.0 + number,
        "length_p90": 9.0, "outcome_draw": 0.1 * number, "outcome_win_seat0": 0.6 - 0.1 * number,
        "outcome_win_seat1": 0.4, "cpu_s": 5.0,
    }  # fmt: skip


def train_counts(number: int) -> dict[str, float]:
    """What round `number`'s training reports."""
    return {
        "steps": 300.0, "steps_run": 300.0, "resumed_from_step": 0.0, "samples": 9600.0, "window_rows": 960.0,
        "batch_draws": 300.0, "loss": 2.0 / number, "policy_loss": 1.5 / number, "value_loss": 0.5 / number,
        "value_accuracy_opening": 0.5 + 0.05 * number, "value_accuracy_middle": 0.6 + 0.05 * number,
        "value_accuracy_end": 0.7 + 0.05 * number, "policy_entropy": 1.8 - 0.2 * number,
        "target_entropy": 1.6, "policy_agreement": 0.3 + 0.1 * number, "cpu_s": 400.0,
    }  # fmt: skip


def steps(number: int) -> list[tuple[int, float, float, float]]:
    """Training progress of round `number`: (step, loss, policy loss, value loss)."""
    return [(step, (3.0 - step / 200) / number, (2.2 - step / 300) / number, (0.8 - step / 600) / number)
            for step in (100, 200, 300)]  # fmt: skip


@dataclass
class History:
    """What `make_history` wrote, for the assertions."""

    models: list[str] = field(default_factory=list)  # rounds 1, 2, 3
    iterations: list[int] = field(default_factory=list)  # the coordinator's numbers of rounds 1, 2, 3
    readings: list[float] = field(default_factory=list)  # when each reading was taken
    train_jobs: dict[int, int] = field(default_factory=dict)  # iteration -> job id
    export_at: dict[int, float] = field(default_factory=dict)  # iteration -> when its export was claimed
    backlog: int = 0  # evaluate jobs left queued at the end


class Driver:
    """Runs jobs as workers would and delivers the events they publish to the coordinator and progress recorder."""

    def __init__(self, app: App, clock: FakeClock) -> None:
        self.app = app
        self.clock = clock
        self.coordinator = PipelineCoordinator(app.store, app.bus, app.queue, app.models, app.settings, clock=clock)
        self.recorder = ProgressRecorder(app.store, clock=clock)
        self.readings = Readings(app.store, app.settings.dashboard, clock=clock)
        self.history = History()
        self.cursor = 0
        self.batches = 0

    def reading(self) -> None:
        self.readings.take()
        self.history.readings.append(self.clock())

    def deliver(self) -> None:
        """Hand every new event to the consumers that take it, in log order, until none is left."""
        for _ in range(20):
            with self.app.store.read() as conn:
                rows = [row for row in event_queries.latest(conn, limit=10_000) if int(row["id"]) > self.cursor]
            if not rows:
                return
            for row in rows:
                self.cursor = int(row["id"])
                event = Event.from_row(row)
                if event.type in coordinator_module.HANDLES:
                    self.coordinator.handle(event)
                if event.type in progress_module.HANDLES:
                    self.recorder.handle(event)
        raise AssertionError("events kept coming")

    def run(self, job_type: str, node: str, run_s: float, counts: dict[str, float], sha: str) -> Any:
        """Claim the oldest queued job of `job_type` on `node`, run it for `run_s` seconds, complete it."""
        lease = self.app.queue.claim(node, types=[job_type])
        assert lease is not None, f"no {job_type} job to claim"
        self.work(lease.job.id, lease.token, run_s)
        self.app.queue.complete(lease.job.id, lease.token, {"artifact_sha256": sha, "size_bytes": 10, "counts": counts})
        return lease.job

    def work(self, job_id: int, token: int, run_s: float) -> None:
        """Let `run_s` seconds pass on the job, heartbeating its lease as a worker does."""
        for _ in range(int(run_s // 20)):
            self.clock.advance(20.0)
            self.app.queue.heartbeat(job_id, token)
        self.clock.advance(run_s % 20)

    def selfplay(self, jobs_now: int) -> None:
        """Queue `jobs_now` selfplay jobs; after a wait, run them two at a time on the CPU node."""
        for _ in range(jobs_now):
            self.app.queue.enqueue(jobs.SELFPLAY, KEY, {"games": SELFPLAY_GAMES})
        self.clock.advance(SELFPLAY_WAIT_S)
        self.reading()
        for _ in range(jobs_now):
            self.batches += 1
            sha = f"{self.batches:04d}" + "b" * 60
            counts = {"games": SELFPLAY_GAMES, "positions": SELFPLAY_SAMPLES, "cpu_s": SELFPLAY_CPU_S}
            job = self.run(jobs.SELFPLAY, CPU_NODE, SELFPLAY_RUN_S / 2, counts, sha)
            with self.app.store.transaction() as conn:
                artifact_queries.record_artifact(
                    conn,
                    {
                        "sha256": sha, "kind": ArtifactKind.GAME_BATCH.value, "size_bytes": 10, "config_key": KEY,
                        "producer_job_id": job.id, "meta": {"samples": SELFPLAY_SAMPLES}, "created_at": self.clock(),
                    },
                )  # fmt: skip
            done = {"job_id": job.id, "artifact_sha256": sha, "games": SELFPLAY_GAMES, "samples": SELFPLAY_SAMPLES}
            self.app.bus.publish("SELFPLAY_COMPLETE", {"config_key": KEY, **done})
            self.deliver()

    def round(self, number: int) -> None:
        """Selfplay until the coordinator exports, then export, train and evaluate as the coordinator asks.

        `number` (1, 2, 3) picks the round's figures; the coordinator numbers its rounds from 0.
        """
        for _ in range(10):
            if len(self.app.queue.list(job_type=jobs.EXPORT)) >= number:
                break
            self.selfplay(2)
        else:
            raise AssertionError(f"round {number} did not export after 20 selfplay jobs")
        (queued,) = self.app.queue.list(job_type=jobs.EXPORT, statuses=[JobStatus.QUEUED])
        iteration = int(queued.payload["iteration"])
        self.history.iterations.append(iteration)
        self.history.export_at[iteration] = self.clock()
        self.reading()
        export = self.run(jobs.EXPORT, GPU_NODE, 30.0, export_counts(number), f"{number:02d}" + "e" * 62)
        self.app.bus.publish(
            "NPZ_EXPORT_COMPLETE", {"config_key": KEY, "job_id": export.id, "window_sha256": "e" * 64, "samples": 960}
        )
        self.deliver()
        lease = self.app.queue.claim(GPU_NODE, types=[jobs.TRAIN])
        assert lease is not None
        self.history.train_jobs[iteration] = lease.job.id
        self.app.bus.publish(
            "TRAINING_STARTED", {"config_key": KEY, "job_id": lease.job.id, "iteration": iteration, "node": GPU_NODE}
        )
        for step, loss, policy, value in steps(number):
            self.work(lease.job.id, lease.token, 40.0)
            self.app.bus.publish(
                "TRAINING_PROGRESS",
                {
                    "config_key": KEY, "job_id": lease.job.id, "step": step, "loss": loss, "policy_loss": policy,
                    "value_loss": value, "samples_per_s": 800.0,
                },
            )  # fmt: skip
        model_sha = f"{number:02d}" + "d" * 62
        self.app.queue.complete(
            lease.job.id, lease.token, {"artifact_sha256": model_sha, "size_bytes": 10, "counts": train_counts(number)}
        )
        trained = {"job_id": lease.job.id, "model_id": "x", "artifact_sha256": model_sha, "loss": 2.0 / number}
        self.app.bus.publish("TRAINING_COMPLETED", {"config_key": KEY, **trained, "samples": 9600})
        self.deliver()
        self.reading()
        best, random = RESULTS[number]
        while (lease := self.app.queue.claim(CPU_NODE, types=[jobs.EVALUATE])) is not None:
            opponent = lease.job.payload["opponent"]
            wins, draws, losses = random if opponent == "random" else best or (0, 0, 0)
            self.work(lease.job.id, lease.token, 45.0)
            counts = {"games": wins + draws + losses, "wins": wins, "draws": draws, "losses": losses, "cpu_s": 90.0}
            self.app.queue.complete(lease.job.id, lease.token, {"artifact_sha256": "f" * 64, "counts": counts})
            result = {
                "job_id": lease.job.id, "model_id": lease.job.payload["model_id"], "opponent": opponent, "wins": wins,
                "draws": draws, "losses": losses, "elo_diff": 0.0, "elo_ci": 100.0,
            }  # fmt: skip
            self.app.bus.publish("EVALUATION_RESULT", {"config_key": KEY, **result})
            self.deliver()
        self.history.models.append(lease_model(self.app, iteration))
        self.reading()


def lease_model(app: App, iteration: int) -> str:
    """The id of the model round `iteration` trained."""
    (model,) = [m for m in app.models.list_models(KEY) if m.meta.get("iteration") == iteration]
    return model.id


def make_history(app: App, clock: FakeClock) -> History:
    """Fill `app`'s store (its clock is `clock`) with three rounds, a backlog and a draining node."""
    app.settings.pipeline.train_after_samples = 4 * SELFPLAY_SAMPLES
    app.settings.pipeline.window_samples = 8 * SELFPLAY_SAMPLES
    app.settings.pipeline.baselines = ["random"]
    app.settings.pipeline.eval_games = 20
    app.settings.pipeline.min_eval_games = 20
    app.settings.pipeline.promotion_cooldown_s = 0.0
    with app.store.transaction() as conn:
        pipeline_queries.ensure_pipeline(conn, KEY, clock())
    app.nodes.register(
        NodeInfo(id=CPU_NODE, host="c1", provider="local", cpu_count=8, memory_bytes=2**34, disk_bytes=2**40,
                 cost_per_hour=CPU_PRICE, slots=2),
        utilisation={"cpu_pct": 80.0},
    )  # fmt: skip
    app.nodes.register(
        NodeInfo(id=GPU_NODE, host="g1", provider="local", cpu_count=16, memory_bytes=2**36, disk_bytes=2**40,
                 cost_per_hour=GPU_PRICE, gpus=[{"name": "H100", "memory_bytes": 80 * 2**30}]),
        utilisation={"cpu_pct": 40.0, "gpu_pct": 90.0},
    )  # fmt: skip
    driver = Driver(app, clock)
    driver.deliver()
    driver.reading()
    for number in (1, 2, 3):
        driver.round(number)
    for _ in range(3):
        app.queue.enqueue(jobs.EVALUATE, KEY, {"purpose": "tournament"})
        driver.history.backlog += 1
    clock.advance(90.0)
    app.nodes.set_status(GPU_NODE, NodeStatus.DRAINING)
    driver.reading()
    clock.advance(60.0)
    driver.reading()
    return driver.history
