"""A tuned pipeline's page links its tune, and the tune's page shows each trial's settings as names and values."""

from __future__ import annotations

import time

import httpx

from tests.server.conftest import running_server
from zeroloop.app import App
from zeroloop.store.queries import pipelines as pipeline_queries
from zeroloop.store.queries import tunes as tune_queries

KEY = "tic_tac_toe_2p"


def _tune(app: App, now: float) -> int:
    with app.store.transaction() as conn:
        tune_id = tune_queries.insert_tune(conn, {
            "config_key": KEY, "status": "running", "sampler": "tpe", "variants": 2, "budget_cpu_s": None,
            "budget_gpu_s": None, "spent_cpu_s": 0.0, "spent_gpu_s": 0.0, "space": {}, "progress": {},
            "created_at": now, "updated_at": now,
        })  # fmt: skip
        tune_queries.insert_trial(conn, {
            "tune_id": tune_id, "variant": f"{KEY}~t1v1", "number": 1, "origin": "sampler", "status": "running",
            "settings": {"workload.learning_rate": 0.002, "workload.mcts_simulations": 64}, "cpu_s": 0.0,
            "gpu_s": 0.0, "started_at": now, "updated_at": now,
        })  # fmt: skip
    return tune_id


def test_a_tuned_pipelines_page_links_its_tune_whose_page_shows_settings_as_names_and_values(app: App) -> None:
    now = time.time()
    with app.store.transaction() as conn:
        pipeline_queries.ensure_pipeline(conn, KEY, now)
    with running_server(app, loopback=True) as url, httpx.Client(base_url=url, timeout=30) as client:
        untuned = client.get(f"/dashboard/pipelines/{KEY}")
        assert untuned.status_code == 200 and 'id="tune"' not in untuned.text
        tune_id = _tune(app, now)
        page = client.get(f"/dashboard/pipelines/{KEY}")
        assert f'tune {tune_id} (running, 2 variants): <a href="/dashboard/tunes/{KEY}">its population</a>' in page.text
        tune = client.get(f"/dashboard/tunes/{KEY}")
    assert tune.status_code == 200
    assert "workload.learning_rate = 0.002<br>workload.mcts_simulations = 64" in tune.text
    assert "{" not in tune.text.split('id="trials"')[1]  # no JSON in the trials table
