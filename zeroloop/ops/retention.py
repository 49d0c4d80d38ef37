"""What retention may delete now, and why everything else stays: the plan a garbage collection carries out.

One read of the store decides. Kept, whatever its age:

- what a kept model names: its file, its training window, and its *lineage*: the game
  batches the export that made its window read (through the window's producer job, which
  is therefore kept too) and the shards those batches were merged into;
- what a queued or running job names (inputs, a window, models), and the lineage of a
  window it names: the export job that made it and that export's inputs, so the model the
  job is about to make has its lineage whole;
- the game batches of each config's next training window;
- finished jobs a kept lineage names (a model's own jobs, the producers of its file and
  window), jobs a queued or running job depends on, and the producer of a late output
  still in the manifest (so that output never passes for accepted, see below).

A kept model is any model that is not rejected, and a rejected one younger than its
retention or one a queued or running job names. When a config's lineage cannot be traced
(a kept model's window whose export job is unknown) none of its game batches are deleted.

Deleted: rejected models past `retention.rejected_models_days` (row, file, and their window
when nothing keeps it); game batches and training windows past `retention.game_batches_days`;
match results past `retention.match_results_days`; and, whatever its age, the *late output*
of a deposed lease holder (an artifact whose producer job finished accepting another
output; see zeroloop.store.queries.artifacts).

`Plan.kept` gives, for every artifact that stays and every finished job past its retention
that stays, the reasons (`zeroloop gc --show`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy.engine import Connection, RowMapping

from zeroloop.artifacts.transfer import ArtifactKind
from zeroloop.config import BASELINE_NAMES, Settings
from zeroloop.store.queries import artifacts as artifact_queries
from zeroloop.store.queries import jobs as job_queries
from zeroloop.store.queries import maintenance as queries

DAY_S = 86400.0
_KINDS = (ArtifactKind.MODEL, ArtifactKind.TRAINING_WINDOW, ArtifactKind.GAME_BATCH, ArtifactKind.MATCH_RESULT)


def artifact_key(kind: str, sha256: str) -> str:
    """How the plan names an artifact: its kind and sha256."""
    return f"{kind} {sha256}"


def job_key(job_id: int) -> str:
    """How the plan names a job."""
    return f"job {job_id}"


@dataclass
class Plan:
    """What goes now, and the reasons for what stays (keys from `artifact_key` and `job_key`)."""

    rejected_models: list[RowMapping] = field(default_factory=list)
    doomed: dict[str, list[RowMapping]] = field(default_factory=dict)  # kind -> artifact rows
    late: dict[str, str] = field(default_factory=dict)  # sha256 of a late output -> why it is late
    protected_jobs: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    kept: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    match_ids: list[int] = field(default_factory=list)  # matches of deleted models past retention

    def keep(self, kind: str, sha256: str, reason: str) -> None:
        """Record a reason to keep an artifact."""
        reasons = self.kept[artifact_key(kind, sha256)]
        if reason not in reasons:
            reasons.append(reason)

    def protect(self, job_id: int, reason: str) -> None:
        """Record a reason to keep a job."""
        if reason not in self.protected_jobs[job_id]:
            self.protected_jobs[job_id].append(reason)


class RetentionPlanner:
    """Builds the plan from one consistent read of the store."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.retention = settings.retention

    def plan(self, conn: Connection, now: float) -> Plan:
        """What retention deletes at `now` (epoch seconds), and why the rest stays."""
        plan = Plan()
        rows = {kind.value: queries.artifacts_of_kind(conn, kind.value, created_before=math.inf) for kind in _KINDS}
        by_sha = {row["sha256"]: row for found in rows.values() for row in found}
        awaited, awaited_models = self._awaited(conn, plan, by_sha)
        kept_models = self._models(conn, plan, now, awaited, awaited_models)
        untraced = self._lineage(conn, plan, kept_models, by_sha)
        for key in queries.pipeline_keys(conn):
            for sha in self._next_window(conn, key):
                plan.keep(ArtifactKind.GAME_BATCH.value, sha, f"in {key}'s next training window")
        for row in artifact_queries.late_outputs(conn):
            sha, job_id = row["sha256"], int(row["producer_job_id"])
            if artifact_key(row["kind"], sha) in plan.kept:
                continue  # named by a model or a job after all: never deleted
            accepted = row["accepted_sha256"]
            plan.late[sha] = f"late output of job {job_id}, which " + (
                f"accepted {accepted[:12]} instead" if accepted else "did not complete"
            )
            plan.protect(job_id, f"its late output {sha[:12]} is deleted first")
        self._doom(plan, rows, now, untraced)
        self._matches(conn, plan, now)
        # Reasons were noted for every name met (a batch since merged into a shard, a file a job
        # names but the manifest lacks); report those of artifacts the manifest holds.
        held = {artifact_key(row["kind"], sha) for sha, row in by_sha.items()}
        plan.kept = defaultdict(list, {key: why for key, why in plan.kept.items() if key in held})
        return plan

    # --- what stays ------------------------------------------------------------------------------

    def _awaited(self, conn: Connection, plan: Plan, by_sha: dict[str, RowMapping]) -> tuple[set[str], set[str]]:
        """Artifacts and model ids queued or running jobs name, kept with the lineage of the windows among them."""
        shas: set[str] = set()
        model_ids: set[str] = set()
        for job in queries.unfinished_jobs(conn):
            who = f"{job['status']} {job['type']} job {job['id']}"
            for name, value in (job["payload"] or {}).items():
                named: list[str] = []
                if name.endswith("sha256") and isinstance(value, str):
                    named = [value]
                elif name == "inputs" and isinstance(value, list):
                    named = [str(sha) for sha in value]
                elif (name.endswith("model_id") or name == "opponent") and isinstance(value, str):
                    model_ids.add(value)
                for sha in named:
                    shas.add(sha)
                    row = by_sha.get(sha)
                    plan.keep(row["kind"] if row else "artifact", sha, f"named by {who}")
                    if row is not None and row["kind"] == ArtifactKind.TRAINING_WINDOW.value:
                        self._window_lineage(conn, plan, row, f"window {sha[:12]} that {who} uses")
        return shas, model_ids

    def _models(
        self, conn: Connection, plan: Plan, now: float, awaited: set[str], awaited_models: set[str]
    ) -> list[RowMapping]:
        """The kept models (their files kept); the rejected ones past retention go into the plan."""
        cutoff = now - self.retention.rejected_models_days * DAY_S
        kept = []
        for model in queries.all_models(conn):
            old_rejected = model["stage"] == "rejected" and model["created_at"] < cutoff
            if old_rejected and model["artifact_sha256"] not in awaited and model["id"] not in awaited_models:
                plan.rejected_models.append(model)
                continue
            kept.append(model)
            if model["stage"] != "rejected":
                why = f"a {model['stage']} model"
            elif not old_rejected:
                why = f"rejected less than retention.rejected_models_days ({self.retention.rejected_models_days:g}) ago"
            else:
                why = "rejected, but a queued or running job names it"
            plan.keep(ArtifactKind.MODEL.value, model["artifact_sha256"], f"the file of model {model['id']} ({why})")
        return kept

    def _lineage(
        self, conn: Connection, plan: Plan, kept: list[RowMapping], by_sha: dict[str, RowMapping]
    ) -> dict[str, str]:
        """Keep each kept model's window, lineage and jobs; the config keys whose lineage is lost, and why."""
        untraced: dict[str, str] = {}
        for model in kept:
            for job_id in model["job_ids"] or []:
                plan.protect(int(job_id), f"made model {model['id']}")
            row = by_sha.get(model["artifact_sha256"])
            if row is not None and row["producer_job_id"] is not None:
                plan.protect(int(row["producer_job_id"]), f"trained model {model['id']}")
            window = model["window_sha256"]
            if not window:
                continue
            plan.keep(ArtifactKind.TRAINING_WINDOW.value, window, f"the training window of model {model['id']}")
            row = by_sha.get(window)
            if row is None:
                continue  # the window itself is gone: nothing left to trace
            if not self._window_lineage(conn, plan, row, f"model {model['id']}'s window {window[:12]}"):
                untraced.setdefault(
                    model["config_key"], f"the export job behind model {model['id']}'s window {window[:12]} is gone"
                )
        return untraced

    def _window_lineage(self, conn: Connection, plan: Plan, window: RowMapping, whose: str) -> bool:
        """Keep the export job that made `window` and the batches it read; False when that job is unknown."""
        job = job_queries.get_job(conn, int(window["producer_job_id"])) if window["producer_job_id"] else None
        if job is None:
            return False
        plan.protect(int(job["id"]), f"made the {whose}")
        for sha in (job["payload"] or {}).get("inputs", []):
            plan.keep(ArtifactKind.GAME_BATCH.value, str(sha), f"read by export job {job['id']} into the {whose}")
        return True

    def _next_window(self, conn: Connection, config_key: str) -> list[str]:
        """The newest accepted game batches of a config that together fill a window: the next export's inputs."""
        chosen, total = [], 0
        for row in artifact_queries.window_batches(conn, config_key):
            chosen.append(str(row["sha256"]))
            total += int(row["meta"].get("samples", 0))
            if total >= self.settings.pipeline.for_key(config_key).window_samples:
                break
        return chosen

    # --- what goes -------------------------------------------------------------------------------

    def _doom(self, plan: Plan, rows: dict[str, list[RowMapping]], now: float, untraced: dict[str, str]) -> None:
        """Sort every artifact into what goes and what stays, with the stays' reasons."""
        retention = self.retention
        ages = {
            ArtifactKind.GAME_BATCH.value: ("game_batches_days", retention.game_batches_days),
            ArtifactKind.TRAINING_WINDOW.value: ("game_batches_days", retention.game_batches_days),
            ArtifactKind.MATCH_RESULT.value: ("match_results_days", retention.match_results_days),
        }
        rejected_files = {m["artifact_sha256"] for m in plan.rejected_models}
        rejected_windows = {m["window_sha256"] for m in plan.rejected_models if m["window_sha256"]}
        kept_batches = {key.split(" ", 1)[1] for key in plan.kept if key.startswith("game_batch ")}
        doomed: dict[str, list[RowMapping]] = defaultdict(list)
        for kind, found in rows.items():
            for row in found:
                sha = row["sha256"]
                if artifact_key(kind, sha) in plan.kept:
                    continue
                if sha in plan.late or sha in rejected_files or sha in rejected_windows:
                    doomed[kind].append(row)
                    continue
                if kind == ArtifactKind.MODEL.value:
                    plan.keep(kind, sha, "a model file no registered model names (gc --repair leaves it too)")
                    continue
                setting, days = ages[kind]
                if row["created_at"] >= now - days * DAY_S:
                    plan.keep(kind, sha, f"younger than retention.{setting} ({days:g} days)")
                elif kind == ArtifactKind.GAME_BATCH.value and row["config_key"] in untraced:
                    lost = untraced[row["config_key"]]
                    plan.keep(kind, sha, f"{row['config_key']}'s lineage cannot be traced: {lost}")
                elif kind == ArtifactKind.GAME_BATCH.value and kept_batches.intersection(
                    row["meta"].get("consolidated_from", [])
                ):
                    plan.keep(kind, sha, "a shard holding batches that are kept")
                else:
                    doomed[kind].append(row)
        plan.doomed = {kind: found for kind, found in doomed.items() if found}

    def _matches(self, conn: Connection, plan: Plan, now: float) -> None:
        """Matches played by deleted models (this pass's included) that are past `retention.match_results_days`."""
        cutoff = now - self.retention.match_results_days * DAY_S
        baselines = set(BASELINE_NAMES) | set(self.settings.pipeline.baselines)
        gone = queries.matches_of_gone_models(conn, cutoff, baselines=baselines)
        doomed_ids = {m["id"] for m in plan.rejected_models}
        if doomed_ids:
            gone = sorted(set(gone) | set(queries.matches_of_models(conn, doomed_ids, before=cutoff)))
        plan.match_ids = gone
