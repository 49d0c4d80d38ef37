"""Retention and garbage collection on both backends: what goes, what a kept lineage keeps, orphans both ways."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.helpers import FakeClock
from tests.ops.conftest import CONFIG, pipeline_app
from zeroloop.app import App
from zeroloop.artifacts.transfer import ArtifactKind
from zeroloop.config import PipelineSettings, RetentionSettings, Settings
from zeroloop.ops.gc import ORPHAN_GRACE_S, GarbageCollector
from zeroloop.pipeline.registry import ModelStage
from zeroloop.store.queries import artifacts as artifact_queries
from zeroloop.store.schema import events, jobs

DAY = 86400.0


@pytest.fixture
def app(store_url: str, tmp_path: Path, clock: FakeClock) -> Iterator[App]:
    with pipeline_app(
        store_url, tmp_path, clock,
        pipeline=PipelineSettings(window_samples=15),
        retention=RetentionSettings(finished_jobs_days=7, game_batches_days=7, rejected_models_days=7),
    ) as opened:  # fmt: skip
        yield opened


def _put(app: App, tmp_path: Path, name: str, kind: ArtifactKind, **extra: object) -> str:
    path = tmp_path / name
    path.write_bytes(name.encode() * 50)
    return app.artifacts.put(path, kind, config_key=CONFIG, **extra).sha256  # type: ignore[arg-type]


def _job(app: App, job_type: str, payload: dict[str, object]) -> int:
    job = app.queue.enqueue(job_type, CONFIG, payload)
    lease = app.queue.claim("w1", types=[job_type])
    assert lease is not None and lease.job.id == job.id
    app.queue.complete(job.id, lease.token, {"ok": True})
    return job.id


def _model(app: App, sha: str, window: str, job_id: int, iteration: int) -> str:
    model = app.models.register_candidate(
        config_key=CONFIG,
        artifact_sha256=sha,
        parent_id=None,
        window_sha256=window,
        job_ids=[job_id],
        iteration=iteration,
    )
    return model.id


def _shas(app: App) -> set[str]:
    with app.store.read() as conn:
        return {row["sha256"] for row in artifact_queries.list_artifacts(conn, limit=10_000)}


def _file(app: App, kind: ArtifactKind, sha: str) -> Path:
    return Path(app.artifacts.location(kind, sha).removeprefix("file://"))


def test_retention_deletes_what_no_kept_lineage_or_window_needs(app: App, clock: FakeClock, tmp_path: Path) -> None:
    batch = {"meta": {"samples": 5}}
    orphaned = _put(app, tmp_path, "b-orphaned", ArtifactKind.GAME_BATCH, **batch)
    clock.advance(1)
    awaited = _put(app, tmp_path, "b-awaited", ArtifactKind.GAME_BATCH, **batch)
    clock.advance(1)
    lineage = _put(app, tmp_path, "b-lineage", ArtifactKind.GAME_BATCH, **batch)
    clock.advance(1)
    in_window = _put(app, tmp_path, "b-window", ArtifactKind.GAME_BATCH, **batch)
    kept_export = _job(app, "export", {"inputs": [lineage]})
    kept_window = _put(app, tmp_path, "w-kept", ArtifactKind.TRAINING_WINDOW, producer_job_id=kept_export)
    kept_train = _job(app, "train", {})
    kept = _model(app, _put(app, tmp_path, "m-kept", ArtifactKind.MODEL), kept_window, kept_train, 0)
    app.models.promote(kept, reason="test")
    lost_export = _job(app, "export", {"inputs": [orphaned]})
    lost_window = _put(app, tmp_path, "w-lost", ArtifactKind.TRAINING_WINDOW, producer_job_id=lost_export)
    lost_model_sha = _put(app, tmp_path, "m-lost", ArtifactKind.MODEL)
    rejected = _model(app, lost_model_sha, lost_window, _job(app, "train", {}), 1)
    app.models.reject(rejected, reason="test")
    spent_selfplay = _job(app, "selfplay", {"games": 1})
    needed = _job(app, "selfplay", {"games": 1})
    clock.advance(8 * DAY)
    dependent = app.queue.enqueue("export", CONFIG, {"inputs": [awaited]}, depends_on=[needed]).id
    fresh = [_put(app, tmp_path, f"b-new{i}", ArtifactKind.GAME_BATCH, **batch) for i in range(2)]
    waiting = app.queue.enqueue("selfplay", CONFIG, {"games": 1}).id
    before = _shas(app)
    collector = GarbageCollector(app.store, app.bus, app.artifacts, app.settings, clock=clock)

    planned = collector.collect(dry_run=True)
    assert planned.rejected_models == [rejected]
    assert planned.artifacts == {
        "game_batch": [orphaned],
        "model": [lost_model_sha],
        "training_window": [lost_window],
    }
    assert planned.jobs == 3  # the lost export, the rejected model's training, the spent selfplay
    assert _shas(app) == before and _file(app, ArtifactKind.GAME_BATCH, orphaned).exists()

    done = collector.collect()
    assert done.counts() == planned.counts()
    assert _shas(app) == before - {orphaned, lost_model_sha, lost_window}
    assert {lineage, in_window, kept_window, awaited, *fresh} <= _shas(app)  # awaited: a queued export reads it
    assert not _file(app, ArtifactKind.GAME_BATCH, orphaned).exists()
    assert not _file(app, ArtifactKind.MODEL, lost_model_sha).exists()
    assert app.artifacts.fetch(lineage).is_file()
    with app.store.read() as conn:
        left = {row.id for row in conn.execute(sa.select(jobs.c.id))}
        announced = conn.execute(sa.select(events.c.payload).where(events.c.type == "GARBAGE_COLLECTED")).scalars()
        (payload,) = list(announced)
    assert left == {kept_export, kept_train, waiting, needed, dependent}  # a queued job's dependency stays
    assert spent_selfplay not in left
    assert payload["counts"]["game_batch"] == 1 and payload["bytes_freed"] > 0
    assert app.models.get(kept).stage is ModelStage.PRODUCTION
    assert not any(collector.collect().counts().values())  # nothing left to do, and nothing announced:
    with app.store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).where(events.c.type == "GARBAGE_COLLECTED")).scalar() == 1


def test_a_config_whose_lineage_is_lost_keeps_its_batches(app: App, clock: FakeClock, tmp_path: Path) -> None:
    batch = _put(app, tmp_path, "b-old", ArtifactKind.GAME_BATCH, meta={"samples": 50})
    window = _put(app, tmp_path, "w-untraced", ArtifactKind.TRAINING_WINDOW)  # no producer job recorded
    _model(app, _put(app, tmp_path, "m", ArtifactKind.MODEL), window, 1, 0)
    clock.advance(8 * DAY)
    _put(app, tmp_path, "b-new", ArtifactKind.GAME_BATCH, meta={"samples": 50})  # fills the window alone
    report = GarbageCollector(app.store, app.bus, app.artifacts, app.settings, clock=clock).collect()
    assert "game_batch" not in report.artifacts
    assert batch in _shas(app)


def test_orphans_are_found_both_ways_and_repaired(app: App, clock: FakeClock, tmp_path: Path) -> None:
    collector = GarbageCollector(app.store, app.bus, app.artifacts, app.settings, clock=clock)
    vanished = _put(app, tmp_path, "vanished", ArtifactKind.GAME_BATCH)
    _file(app, ArtifactKind.GAME_BATCH, vanished).unlink()  # as a crash between file and row leaves it
    model_sha = _put(app, tmp_path, "model", ArtifactKind.MODEL)
    _model(app, model_sha, "", 1, 0)
    _file(app, ArtifactKind.MODEL, model_sha).unlink()
    stray_sha = "ab" * 32
    stray = _file(app, ArtifactKind.GAME_BATCH, stray_sha)
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"no row names me")
    part = stray.with_name(f"{stray_sha}.0123.part")  # an upload that died half way
    part.write_bytes(b"half")
    quarantined = Path(app.artifacts.root) / "quarantine" / f"{stray_sha}.dead"
    quarantined.parent.mkdir(parents=True)
    quarantined.write_bytes(b"kept for a person to look at")

    young = collector.collect(dry_run=True)
    assert young.orphan_files == []  # within the grace period: may be an upload about to record its row
    assert sorted(young.missing_files) == sorted([vanished, model_sha])

    clock.advance(ORPHAN_GRACE_S + 1)
    found = collector.collect()
    assert sorted(found.orphan_files) == sorted([f"game_batch/ab/{stray_sha}", f"game_batch/ab/{part.name}"])
    assert stray.exists() and not found.repaired  # reported, not touched without --repair

    assert found.repair_refused is not None and "holds none of the 2 files" in found.repair_refused
    repaired = collector.collect(repair=True, force=True)  # every file of the manifest is gone: only when forced
    assert repaired.repaired and not stray.exists() and not part.exists()
    assert quarantined.exists()
    with app.store.read() as conn:
        assert artifact_queries.get_artifact(conn, vanished) is None  # nothing names it: gone
        assert artifact_queries.get_artifact(conn, model_sha) is not None  # a model names it: the row stays
        assert artifact_queries.copies_of(conn, model_sha) == []
    again = collector.collect(repair=True)
    assert again.orphan_files == [] and again.missing_files == [] and again.repair_refused is None


def test_gc_command_reports_a_dry_run(settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from zeroloop.cli.main import app as cli

    monkeypatch.setenv("ZEROLOOP_DATA_DIR", str(tmp_path / "cli"))
    result = CliRunner().invoke(cli, ["gc", "--dry-run"], env={"COLUMNS": "150"})
    assert result.exit_code == 0, result.output
    assert "would go (dry run)" in result.output and "rejected models" in result.output
