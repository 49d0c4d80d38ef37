"""Consolidation on both backends: small game batches become one verified shard, swapped in atomically."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import FakeClock
from tests.ops.conftest import CONFIG, pipeline_app
from zeroloop.app import App
from zeroloop.artifacts.transfer import ArtifactKind
from zeroloop.config import MaintenanceSettings, PipelineSettings, RetentionSettings
from zeroloop.ops.consolidate import Consolidator
from zeroloop.ops.gc import GarbageCollector
from zeroloop.store.queries import artifacts as artifact_queries
from zeroloop.store.queries import maintenance as maintenance_queries
from zeroloop.workload.datafiles import load_game_batch, write_npz

HOUR = 3600.0


@pytest.fixture
def app(store_url: str, tmp_path: Path, clock: FakeClock) -> Iterator[App]:
    with pipeline_app(
        store_url, tmp_path, clock,
        pipeline=PipelineSettings(window_samples=1000),
        maintenance=MaintenanceSettings(consolidate_after_s=HOUR, shard_target_bytes=10**8),
        retention=RetentionSettings(game_batches_days=1),
    ) as opened:  # fmt: skip
        yield opened


def _batch(app: App, tmp_path: Path, seed: int, games: int) -> str:
    """A game batch of `games` tic-tac-toe games of 3 positions each, stored; its sha256."""
    rng = np.random.default_rng(seed)
    positions = 3 * games
    arrays = {
        "obs": rng.random((positions, 3, 3, 3), dtype=np.float32),
        "policy": np.full((positions, 9), 1 / 9, dtype=np.float32),
        "value": np.stack([outcome := rng.choice([-1.0, 0.0, 1.0], positions), -outcome], axis=1).astype(np.float32),
        "mask": np.ones((positions, 9), dtype=np.bool_),
        "game_index": np.repeat(np.arange(games, dtype=np.int32), 3),
        "game_lengths": np.full(games, 3, dtype=np.int32),
        "game_moves": np.full(games, 3 + seed, dtype=np.int32),
        "config_key": np.asarray(CONFIG),
        "model_sha256": np.asarray(f"model-{seed}"),
        "num_games": np.asarray(games, dtype=np.int64),
    }
    path = tmp_path / f"batch-{seed}.npz"
    write_npz(path, arrays)
    meta = {"samples": positions, "games": games}
    return app.artifacts.put(path, ArtifactKind.GAME_BATCH, config_key=CONFIG, meta=meta).sha256


def _batches(app: App) -> list[str]:
    with app.store.read() as conn:
        rows = artifact_queries.list_artifacts(conn, config_key=CONFIG, kind=ArtifactKind.GAME_BATCH.value)
    return [row["sha256"] for row in rows]  # newest first, as the coordinator picks a window


def test_old_small_batches_become_one_shard_in_their_place(app: App, clock: FakeClock, tmp_path: Path) -> None:
    old = []
    for seed in range(3):
        old.append(_batch(app, tmp_path, seed, games=seed + 1))
        clock.advance(60)
    newest_old_at = clock() - 60
    clock.advance(2 * HOUR)
    fresh = _batch(app, tmp_path, 9, games=2)
    consolidator = Consolidator(app.store, app.artifacts, app.settings, clock=clock)

    report = consolidator.run()
    (shard,) = report.shards
    assert report.merged == 3
    assert _batches(app) == [fresh, shard]  # the window reads two files now, in the same order
    with app.store.read() as conn:
        row = artifact_queries.get_artifact(conn, shard)
        assert all(artifact_queries.get_artifact(conn, sha) is None for sha in old)
    assert row is not None and row["created_at"] == newest_old_at
    assert row["meta"] == {"samples": 18, "games": 6, "consolidated_from": sorted(old)}
    arrays = load_game_batch(app.artifacts.fetch(shard), CONFIG)
    assert arrays["obs"].shape[0] == 18 and int(arrays["num_games"]) == 6
    assert arrays["game_index"].tolist() == [g for g in range(6) for _ in range(3)]  # renumbered across members
    assert arrays["game_moves"].tolist() == [3, 4, 4, 5, 5, 5]  # each member's games, in order
    for sha in old:
        assert not Path(app.artifacts.location(ArtifactKind.GAME_BATCH, sha).removeprefix("file://")).exists()
    assert consolidator.run().shards == []  # one shard is no group: nothing more to do


def test_a_running_export_keeps_its_inputs_and_lineage_keeps_the_shard(
    app: App, clock: FakeClock, tmp_path: Path
) -> None:
    old = [_batch(app, tmp_path, seed, games=1) for seed in range(2)]
    clock.advance(2 * HOUR)
    export = app.queue.enqueue("export", CONFIG, {"inputs": old})
    consolidator = Consolidator(app.store, app.artifacts, app.settings, clock=clock)
    assert consolidator.run().skipped == 1
    assert sorted(_batches(app)) == sorted(old)  # untouched while the export may read them

    lease = app.queue.claim("w1", types=["export"])
    assert lease is not None
    app.queue.complete(export.id, lease.token, {"ok": True})
    window = tmp_path / "window"
    window.write_bytes(b"window")
    window_sha = app.artifacts.put(window, ArtifactKind.TRAINING_WINDOW, producer_job_id=export.id).sha256
    model = tmp_path / "model"
    model.write_bytes(b"model")
    app.models.register_candidate(
        config_key=CONFIG,
        artifact_sha256=app.artifacts.put(model, ArtifactKind.MODEL).sha256,
        parent_id=None,
        window_sha256=window_sha,
        job_ids=[export.id],
        iteration=0,
    )
    (shard,) = consolidator.run().shards
    clock.advance(3 * 86400)
    _batch(app, tmp_path, 7, games=400)  # the newest window is this batch alone
    report = GarbageCollector(app.store, app.bus, app.artifacts, app.settings, clock=clock).collect()
    assert "game_batch" not in report.artifacts  # the shard holds a kept model's batches
    assert shard in _batches(app)


def test_batches_of_another_format_are_left_alone(app: App, clock: FakeClock, tmp_path: Path) -> None:
    foreign = []
    for seed in range(2):
        path = tmp_path / f"foreign-{seed}.npz"
        np.savez(path, positions=np.arange(seed + 3))
        foreign.append(app.artifacts.put(path, ArtifactKind.GAME_BATCH, config_key=CONFIG).sha256)
    clock.advance(2 * HOUR)
    report = Consolidator(app.store, app.artifacts, app.settings, clock=clock).run()
    assert (report.shards, report.skipped) == ([], 1)
    assert sorted(_batches(app)) == sorted(foreign)


def test_a_member_that_goes_meanwhile_leaves_the_group_unmerged(
    app: App, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = [_batch(app, tmp_path, seed, games=1) for seed in range(3)]
    clock.advance(2 * HOUR)
    consolidator = Consolidator(app.store, app.artifacts, app.settings, clock=clock)
    upload = app.artifacts.upload_shared

    def upload_while_gc_deletes_a_member(source: Path, kind: ArtifactKind) -> tuple[str, int]:
        with app.store.transaction() as conn:
            maintenance_queries.delete_artifact(conn, old[0])
        return upload(source, kind)

    monkeypatch.setattr(app.artifacts, "upload_shared", upload_while_gc_deletes_a_member)
    assert consolidator.run().skipped == 1
    assert sorted(_batches(app)) == sorted(old[1:])  # nothing swapped: the other members stay as they were
    monkeypatch.setattr(app.artifacts, "upload_shared", upload)
    (shard,) = consolidator.run().shards  # the next pass merges what is left
    assert _batches(app) == [shard]
