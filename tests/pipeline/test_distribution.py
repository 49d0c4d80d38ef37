"""Model distribution: a worker over the store polls the production models and caches each new one once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from zeroloop.app import App
from zeroloop.artifacts.transfer import ArtifactKind
from zeroloop.config import Settings
from zeroloop.daemons.daemon import DaemonContext
from zeroloop.pipeline.distribution import ModelPrefetcher, model_distribution_daemon
from zeroloop.store.queries import pipelines as pipeline_queries

KEY = "tic_tac_toe_2p"


def _promote(app: App, tmp_path: Path, iteration: int) -> str:
    source = tmp_path / f"model-{iteration}.pt"
    source.write_bytes(f"weights of round {iteration}".encode())
    artifact = app.artifacts.put(source, ArtifactKind.MODEL, config_key=KEY)
    model = app.models.register_candidate(
        config_key=KEY, artifact_sha256=artifact.sha256, parent_id=None, window_sha256=None, job_ids=[],
        iteration=iteration,
    )  # fmt: skip
    app.models.promote(model.id, reason="test")
    app.artifacts.cache.remove(artifact.sha256)  # as on a worker that never had it
    return artifact.sha256


def test_each_promoted_model_is_fetched_into_the_cache_once(tmp_path: Path) -> None:
    with App(Settings(data_dir=tmp_path / "data")) as app:
        with app.store.transaction() as conn:
            pipeline_queries.ensure_pipeline(conn, KEY, app.clock())
        daemon = model_distribution_daemon(DaemonContext(app))
        assert isinstance(daemon, ModelPrefetcher)
        asyncio.run(daemon.run_once())
        assert daemon.fetched == 0  # nothing promoted yet

        first = _promote(app, tmp_path, 1)
        asyncio.run(daemon.run_once())
        asyncio.run(daemon.run_once())
        assert daemon.fetched == 1 and app.artifacts.cache.get(first) is not None

        second = _promote(app, tmp_path, 2)
        asyncio.run(daemon.run_once())
        assert daemon.fetched == 2 and app.artifacts.cache.get(second) is not None
        assert daemon.errors == 0
