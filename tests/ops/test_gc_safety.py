"""Garbage collection that cannot destroy: repair refuses a wrong location, lineage is never cut, and what
stays says why. Also the retention of match results and the abort of stale S3 multipart uploads.

On SQLite and PostgreSQL (the `app` fixture), with real files, and a real S3 API (moto) for uploads.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.helpers import FakeClock
from tests.ops.conftest import CONFIG, pipeline_app
from tests.s3 import Location
from zeroloop.app import App
from zeroloop.artifacts.transfer import ArtifactKind
from zeroloop.config import ArtifactSettings, PipelineSettings, RetentionSettings, Settings
from zeroloop.errors import OperationsError
from zeroloop.ops import multipart
from zeroloop.ops.gc import GarbageCollector
from zeroloop.store.queries import artifacts as artifact_queries
from zeroloop.store.schema import elo_history, jobs, matches

DAY = 86400.0
RETENTION = RetentionSettings(finished_jobs_days=7, game_batches_days=7, rejected_models_days=7, match_results_days=30)


@pytest.fixture
def app(store_url: str, tmp_path: Path, clock: FakeClock) -> Iterator[App]:
    with pipeline_app(
        store_url, tmp_path, clock, pipeline=PipelineSettings(window_samples=10), retention=RETENTION
    ) as opened:
        yield opened


def _put(app: App, tmp_path: Path, name: str, kind: ArtifactKind, **extra: object) -> str:
    path = tmp_path / name
    path.write_bytes(name.encode() * 50)
    return app.artifacts.put(path, kind, config_key=CONFIG, **extra).sha256  # type: ignore[arg-type]


def _job(app: App, job_type: str, payload: dict[str, object], *, complete: bool = True) -> int:
    job = app.queue.enqueue(job_type, CONFIG, payload)
    lease = app.queue.claim("w1", types=[job_type])
    assert lease is not None and lease.job.id == job.id
    if complete:
        app.queue.complete(job.id, lease.token, {"ok": True})
    return job.id


def _shas(app: App) -> set[str]:
    with app.store.read() as conn:
        return {row["sha256"] for row in artifact_queries.list_artifacts(conn, limit=10_000)}


def _copies(app: App) -> int:
    with app.store.read() as conn:
        return sum(len(artifact_queries.copies_of(conn, sha)) for sha in _shas(app))


def _collector(app: App, clock: FakeClock, url: str | None = None) -> GarbageCollector:
    """A collector over `app`'s store, with the artifact location at `url` (as a mistyped setting would)."""
    if url is None:
        return GarbageCollector(app.store, app.bus, app.artifacts, app.settings, clock=clock)
    settings = app.settings.model_copy(update={"artifacts": ArtifactSettings(url=url)})
    artifacts = type(app.artifacts)(
        app.store, app.bus, url=url, cache_dir=app.settings.data_dir / "cache2", cache_max_bytes=0, node="n"
    )
    return GarbageCollector(app.store, app.bus, artifacts, settings, clock=clock)


# --- repair refuses a location that looks wrong -------------------------------------------------


def test_repair_refuses_a_location_that_looks_wrong_and_the_dry_run_says_why(
    app: App, clock: FakeClock, tmp_path: Path
) -> None:
    shas = [_put(app, tmp_path, f"batch-{n}", ArtifactKind.GAME_BATCH) for n in range(20)]
    clock.advance(2 * 3600)
    rows, copies = _shas(app), _copies(app)
    real = Path(app.artifacts.root)
    typo = tmp_path / "data" / "artifact"  # one letter short: nothing there
    empty = tmp_path / "empty"
    empty.mkdir()
    partial = tmp_path / "partial"  # a stale copy of the location holding a quarter of the files
    for sha in shas[:5]:
        key = f"game_batch/{sha[:2]}/{sha}"
        (partial / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(real / key, partial / key)
    expected = {
        typo: f"the artifact location {typo.as_uri()} does not exist, and the manifest names 20 files in it",
        empty: f"the artifact location {empty.as_uri()} holds none of the 20 files the manifest names",
        partial: f"15 of the manifest's 20 files (75%) are missing at {partial.as_uri()}, more than "
        "artifacts.missing_max_pct (10%)",
    }
    for where, why in expected.items():
        collector = _collector(app, clock, where.as_uri())
        assert collector.collect(dry_run=True).repair_refused == why  # the dry run says why
        assert collector.collect(dry_run=True, repair=True).repair_refused == why
        with pytest.raises(OperationsError, match=r"^gc --repair refused, nothing changed: ") as refused:
            collector.collect(repair=True)
        assert why in str(refused.value) and "--force" in str(refused.value)
        assert (_shas(app), _copies(app)) == (rows, copies)  # nothing changed

    forced = _collector(app, clock, partial.as_uri()).collect(repair=True, force=True)
    assert forced.repaired and len(forced.missing_files) == 15  # forced, it does what it was told

    (real / f"game_batch/{shas[0][:2]}/{shas[0]}").unlink()  # one of the 5 left: 20 %, refused again
    with pytest.raises(OperationsError, match="1 of the manifest's 5 files"):
        _collector(app, clock).collect(repair=True)
    app.settings.artifacts.missing_max_pct = 25.0
    assert _collector(app, clock).collect(repair=True).missing_files == [shas[0]]  # within the limit: repaired


def test_the_gc_command_refuses_a_mistyped_location_in_one_line(
    settings: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from zeroloop.cli.main import app as cli

    monkeypatch.setenv("ZEROLOOP_DATA_DIR", str(tmp_path / "cli"))
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    source = tmp_path / "batch"
    source.write_bytes(b"games")
    with App(Settings(data_dir=tmp_path / "cli")) as app:
        app.artifacts.put(source, ArtifactKind.GAME_BATCH, config_key=CONFIG)
    monkeypatch.setenv("ZEROLOOP_ARTIFACTS__URL", (tmp_path / "cli" / "artifactz").as_uri())
    dry = runner.invoke(cli, ["gc", "--dry-run"], env={"COLUMNS": "200"})
    assert dry.exit_code == 0 and "the artifact location looks wrong" in dry.output, dry.output
    refused = runner.invoke(cli, ["gc", "--repair"])
    assert isinstance(refused.exception, OperationsError) and "does not exist" in str(refused.exception)
    monkeypatch.delenv("ZEROLOOP_ARTIFACTS__URL")
    with App(Settings(data_dir=tmp_path / "cli")) as app, app.store.read() as conn:
        assert len(artifact_queries.list_artifacts(conn)) == 1


# --- lineage is never cut, and what stays says why ---------------------------------------------


def test_the_lineage_a_running_train_names_is_kept_and_stays_traceable(
    app: App, clock: FakeClock, tmp_path: Path
) -> None:
    meta = {"meta": {"samples": 5}}
    read = [_put(app, tmp_path, f"b-read{n}", ArtifactKind.GAME_BATCH, **meta) for n in range(2)]
    spare = _put(app, tmp_path, "b-spare", ArtifactKind.GAME_BATCH, **meta)
    export = _job(app, "export", {"inputs": read})
    window = _put(app, tmp_path, "w", ArtifactKind.TRAINING_WINDOW, producer_job_id=export)
    clock.advance(10 * DAY)  # the export and its batches are past retention
    train = _job(app, "train", {"window_sha256": window}, complete=False)  # running, for days (a big model)
    fresh = [_put(app, tmp_path, f"b-new{n}", ArtifactKind.GAME_BATCH, **meta) for n in range(2)]  # the next window

    report = _collector(app, clock).collect()
    assert report.artifacts == {"game_batch": [spare]}
    assert report.kept[f"job {export}"] == [f"made the window {window[:12]} that running train job {train} uses"]
    assert report.kept[f"game_batch {read[0]}"] == [
        f"read by export job {export} into the window {window[:12]} that running train job {train} uses"
    ]
    assert report.kept[f"training_window {window}"] == [f"named by running train job {train}"]
    assert report.kept[f"game_batch {fresh[0]}"] == [f"in {CONFIG}'s next training window"]

    model_sha = _put(app, tmp_path, "m", ArtifactKind.MODEL, producer_job_id=train)
    with app.store.read() as conn:
        lease_token = conn.execute(sa.select(jobs.c.lease_token).where(jobs.c.id == train)).scalar_one()
    app.queue.complete(train, lease_token, {"artifact_sha256": model_sha})
    model = app.models.register_candidate(
        config_key=CONFIG, artifact_sha256=model_sha, parent_id=None, window_sha256=window, job_ids=[train],
        iteration=0,
    )  # fmt: skip
    later = _put(app, tmp_path, "b-later", ArtifactKind.GAME_BATCH, **meta)
    clock.advance(10 * DAY)
    newest = [_put(app, tmp_path, f"b-newest{n}", ArtifactKind.GAME_BATCH, **meta) for n in range(2)]
    report = _collector(app, clock).collect()
    # The config's lineage is whole, so what no lineage names goes; what the model's lineage names stays.
    assert sorted(report.artifacts["game_batch"]) == sorted([*fresh, later])
    assert set(read) <= _shas(app) and set(newest) <= _shas(app)
    assert report.kept[f"job {export}"] == [f"made the model {model.id}'s window {window[:12]}"]
    assert report.kept[f"game_batch {read[1]}"] == [
        f"read by export job {export} into the model {model.id}'s window {window[:12]}"
    ]
    assert report.kept[f"model {model_sha}"] == [f"the file of model {model.id} (a candidate model)"]


def test_gc_show_lists_why_each_kept_thing_is_kept(
    settings: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from zeroloop.cli.main import app as cli

    monkeypatch.setenv("ZEROLOOP_DATA_DIR", str(tmp_path / "cli"))
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    source = tmp_path / "batch"
    source.write_bytes(b"games")
    with App(Settings(data_dir=tmp_path / "cli")) as app:
        sha = app.artifacts.put(source, ArtifactKind.GAME_BATCH, config_key=CONFIG).sha256
    shown = runner.invoke(cli, ["gc", "--dry-run", "--show"], env={"COLUMNS": "250"})
    assert shown.exit_code == 0, shown.output
    assert f"kept game_batch {sha}: younger than retention.game_batches_days (7 days)" in shown.output


# --- match results ------------------------------------------------------------------------------


def test_match_results_have_a_retention_rule(app: App, clock: FakeClock, tmp_path: Path) -> None:
    production = app.models.register_candidate(
        config_key=CONFIG, artifact_sha256=_put(app, tmp_path, "m-prod", ArtifactKind.MODEL), parent_id=None,
        window_sha256=None, job_ids=[], iteration=0,
    )  # fmt: skip
    app.models.promote(production.id, reason="test")
    rejected = app.models.register_candidate(
        config_key=CONFIG, artifact_sha256=_put(app, tmp_path, "m-rej", ArtifactKind.MODEL), parent_id=None,
        window_sha256=None, job_ids=[], iteration=1,
    )  # fmt: skip
    app.models.reject(rejected.id, reason="test")
    for model_id, opponent in ((production.id, "random"), (rejected.id, production.id), (rejected.id, "random")):
        app.models.record_match(
            config_key=CONFIG, model_id=model_id, opponent=opponent, wins=3, draws=0, losses=1, elo_diff=100.0,
            elo_ci=50.0, job_id=None,
        )  # fmt: skip
    old_result = _put(app, tmp_path, "r-old", ArtifactKind.MATCH_RESULT)
    named_result = _put(app, tmp_path, "r-named", ArtifactKind.MATCH_RESULT)
    clock.advance(31 * DAY)
    young_result = _put(app, tmp_path, "r-young", ArtifactKind.MATCH_RESULT)
    waiting = app.queue.enqueue("evaluate", CONFIG, {"result_sha256": named_result}).id

    report = _collector(app, clock).collect()
    assert report.rejected_models == [rejected.id]
    assert report.artifacts["match_result"] == [old_result]
    assert report.matches == 2  # the rejected model's two matches; production's rating keeps its own
    assert report.kept[f"match_result {named_result}"] == [f"named by queued evaluate job {waiting}"]
    assert report.kept[f"match_result {young_result}"] == ["younger than retention.match_results_days (30 days)"]
    with app.store.read() as conn:
        left = conn.execute(sa.select(matches.c.player_a, matches.c.player_b)).all()
        players = set(conn.execute(sa.select(elo_history.c.model_id)).scalars())
    assert [tuple(row) for row in left] == [(production.id, "random")]
    assert rejected.id not in players and production.id in players
    assert not any(_collector(app, clock).collect().counts().values())


# --- S3 multipart uploads left incomplete -------------------------------------------------------


def test_gc_aborts_incomplete_multipart_uploads_older_than_the_grace(
    store_url: str, tmp_path: Path, clock: FakeClock, s3_location: Location
) -> None:
    artifacts = ArtifactSettings(url=s3_location.url, storage_options=s3_location.storage_options)
    with pipeline_app(store_url, tmp_path, clock, artifacts=artifacts, retention=RETENTION) as app:
        fs, root = app.artifacts.fs, app.artifacts.root
        bucket, prefix = root.split("/", 1)
        key = f"{prefix}/game_batch/ab/{'ab' * 32}.0123.part"  # an upload that died after its first part
        started = fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key)
        fs.call_s3("upload_part", Bucket=bucket, Key=key, UploadId=started["UploadId"], PartNumber=1, Body=b"x" * 1024)
        elsewhere = fs.call_s3("create_multipart_upload", Bucket=bucket, Key="not-zeroloop/big.bin")  # not ours
        kept = _put(app, tmp_path, "complete", ArtifactKind.GAME_BATCH)
        collector = _collector(app, clock)

        (listed,) = multipart.incomplete_uploads(fs, root, started_before=float("inf"))
        clock.now = listed.initiated + RETENTION.multipart_grace_s - 60  # as S3 records its start (moto: fixed)
        assert collector.collect().incomplete_uploads == []  # younger than the grace: may still be uploading
        clock.advance(120)
        planned = collector.collect(dry_run=True)
        assert planned.incomplete_uploads == [f"{key} ({started['UploadId']})"]
        assert len(multipart.incomplete_uploads(fs, root, started_before=clock())) == 1  # a dry run aborts nothing
        done = collector.collect()
        assert done.counts()["incomplete_uploads"] == 1
        assert multipart.incomplete_uploads(fs, root, started_before=float("inf")) == []
        others = fs.call_s3("list_multipart_uploads", Bucket=bucket)["Uploads"]
        assert [upload["UploadId"] for upload in others] == [elsewhere["UploadId"]]
        assert kept in _shas(app) and app.artifacts.fetch(kept).is_file()
