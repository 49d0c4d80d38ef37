"""The delivery ledger: which node holds which production model, shown by `nodes ls` and the dashboard.

A model the cache evicted (a disk that filled) is fetched again at the next poll, and the
ledger says what the cache holds now, not what was once fetched.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from rich.console import Console

from tests.server.conftest import running_server
from zeroloop.app import App, worker_table
from zeroloop.artifacts.transfer import ArtifactKind
from zeroloop.cli.cluster import nodes_table
from zeroloop.cluster.nodes import NodeInfo
from zeroloop.control import views
from zeroloop.control.tokens import Role, Tokens
from zeroloop.daemons.daemon import DaemonContext
from zeroloop.daemons.manager import DaemonRecord
from zeroloop.pipeline.distribution import NAME, ModelPrefetcher, model_distribution_daemon
from zeroloop.store.queries import daemons as daemon_queries
from zeroloop.store.queries import pipelines as pipeline_queries

KEY = "tic_tac_toe_2p"


def _promote(app: App, tmp_path: Path, iteration: int) -> tuple[str, str]:
    source = tmp_path / f"model-{iteration}.pt"
    source.write_bytes(f"weights of round {iteration}".encode())
    artifact = app.artifacts.put(source, ArtifactKind.MODEL, config_key=KEY)
    model = app.models.register_candidate(
        config_key=KEY, artifact_sha256=artifact.sha256, parent_id=None, window_sha256=None, job_ids=[],
        iteration=iteration,
    )  # fmt: skip
    app.models.promote(model.id, reason="test")
    app.artifacts.cache.remove(artifact.sha256)  # as on a worker that never had it
    return model.id, artifact.sha256


def _report(app: App, node: str, daemon: ModelPrefetcher) -> None:
    """Write the daemon's record as the node's daemon manager does (through the store or the server)."""
    (spec,) = [spec for spec in worker_table().for_profile("training_node") if spec.name == NAME]
    record = DaemonRecord(spec, tracker=None)  # type: ignore[arg-type]
    record.health = daemon.health()
    with app.store.transaction() as conn:
        daemon_queries.upsert_daemon(conn, record.row(node, app.clock()))


def test_a_production_model_the_cache_evicted_is_fetched_again_and_the_ledger_shows_what_is_held(
    app: App, tmp_path: Path
) -> None:
    with app.store.transaction() as conn:
        pipeline_queries.ensure_pipeline(conn, KEY, app.clock())
    app.nodes.register(NodeInfo("w1", "h", "local", 1, 1, 1))
    daemon = model_distribution_daemon(DaemonContext(app))
    assert isinstance(daemon, ModelPrefetcher)
    model_id, sha = _promote(app, tmp_path, 1)
    asyncio.run(daemon.run_once())
    assert daemon.fetched == 1 and daemon.holds == {KEY: sha}
    app.artifacts.cache.evict_until(lambda: False)  # the disk filled: the cache gave everything up
    assert app.artifacts.cache.get(sha) is None
    asyncio.run(daemon.run_once())
    assert daemon.fetched == 2 and app.artifacts.cache.get(sha) is not None  # fetched again, not remembered
    _report(app, "w1", daemon)

    (row,) = views.nodes(app)
    assert row["holds"] == {KEY: model_id}
    console = Console(width=300, record=True)
    console.print(nodes_table(app))
    assert f"{KEY}: {model_id}" in console.export_text()

    admin, _ = Tokens(app.store).create(Role.ADMIN)
    with running_server(app) as url:
        page = httpx.get(f"{url}/dashboard/nodes", headers={"Authorization": f"Bearer {admin}"}, timeout=30)
    assert page.status_code == 200 and f"{KEY}: {model_id}" in page.text
