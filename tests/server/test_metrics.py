"""`/metrics` parsed with prometheus-client's own parser and checked against the store."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import make_app
from tests.server.conftest import running_server
from tests.server.observed import KEY, NODE, populate
from zeroloop.app import App
from zeroloop.control.views import SELFPLAY_RATE_WINDOW_S
from zeroloop.queue.backpressure import BackpressureLevel
from zeroloop.store.queries import consumers as consumer_queries
from zeroloop.store.queries import events as event_queries
from zeroloop.store.queries import job_stats
from zeroloop.store.queries import jobs as job_queries
from zeroloop.store.queries import pipelines as pipeline_queries

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _events(app: App) -> int:
    with app.store.read() as conn:
        return sum(event_queries.count_by_type(conn).values())


def scrape(url: str) -> Samples:
    """Every sample of one scrape, by name and label set."""
    answer = httpx.get(f"{url}/metrics", timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    found: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def one(samples: Samples, name: str, **labels: str) -> float:
    """The value of one sample; KeyError naming it when the scrape lacks it."""
    key = (name, frozenset(labels.items()))
    if key not in samples:
        raise KeyError(f"{name}{labels} not in the scrape: {sorted(n for n, _ in samples)}")
    return samples[key]


def test_metrics_match_the_store(app: App, store_url: str, tmp_path: Path) -> None:
    seen = populate(app)
    for games in (32, 16):
        app.bus.publish(
            "GAME_BATCH_READY", {"config_key": KEY, "artifact_sha256": "c" * 64, "games": games, "samples": 9}
        )
    now = app.clock()
    with app.store.transaction() as conn:
        for counter in ("queued", "claimed", "completed", "completed", "dead"):
            job_stats.bump(conn, KEY, "selfplay", counter, now)
        consumer_queries.ensure_consumer(
            conn, "dashboard-test", types=["GAME_BATCH_READY"], config_keys=None, node="n", start=(0, 0), now=now
        )
        job_queries.lock_backpressure(conn, "train", initial="NONE", now=now)
        job_queries.set_backpressure(conn, "train", level="HARD", depth=900, now=now)
    before = _events(app)
    with running_server(app, loopback=True) as url:
        samples = scrape(url)
        for path in ("/api/overview", "/api/queue", "/dashboard", "/dashboard/queue"):
            assert httpx.get(f"{url}{path}", timeout=30).status_code == 200
    assert _events(app) == before  # looking publishes nothing (backpressure is read as producers recorded it)
    assert one(samples, "zeroloop_queue_backpressure_level", type="train") == BackpressureLevel.HARD
    stats = app.queue.stats()
    assert one(samples, "zeroloop_queue_jobs", type="train", status="dead") == stats["train"]["dead"] == 1
    assert one(samples, "zeroloop_queue_jobs", type="train", status="queued") == 0
    assert one(samples, "zeroloop_jobs_total", config_key=KEY, type="selfplay", outcome="completed") == 2
    assert one(samples, "zeroloop_jobs_total", config_key=KEY, type="selfplay", outcome="dead") == 1
    assert one(samples, "zeroloop_event_consumer_lag_events", consumer="dashboard-test") == 2
    assert one(samples, "zeroloop_dead_letters", status="pending") == 1
    assert one(samples, "zeroloop_nodes", status="active") == 1
    assert one(samples, "zeroloop_daemons", state="backoff") == 1
    assert one(samples, "zeroloop_daemon_restarts", node=NODE, daemon="job_executor") == 3
    assert one(samples, "zeroloop_node_utilisation_percent", node=NODE, resource="cpu") == 42.0
    assert one(samples, "zeroloop_node_utilisation_percent", node=NODE, resource="memory") == 55.0
    assert ("zeroloop_node_utilisation_percent", frozenset({("node", NODE), ("resource", "gpu")})) not in samples
    assert one(samples, "zeroloop_node_cost_per_hour", node=NODE) == 1.5
    assert one(samples, "zeroloop_fleet_cost_per_hour") == 1.5
    report = app.health.assess()
    assert one(samples, "zeroloop_health_score") == report.score
    assert one(samples, "zeroloop_health_level", level=report.level.value) == 1.0
    assert sum(value for (name, _), value in samples.items() if name == "zeroloop_health_level") == 1.0
    assert one(samples, "zeroloop_production_elo", config_key=KEY) == app.models.get(seen.second_model).elo
    assert one(samples, "zeroloop_production_elo_half_width", config_key=KEY) > 0
    assert one(samples, "zeroloop_training_loss", config_key=KEY) == seen.loss
    assert one(samples, "zeroloop_training_samples_per_second", config_key=KEY) == 1234.0
    assert one(samples, "zeroloop_selfplay_games_per_second", config_key=KEY) == 48 / SELFPLAY_RATE_WINDOW_S
    assert one(samples, "zeroloop_samples_total", config_key=KEY) == 5000
    assert one(samples, "zeroloop_pipeline_paused", config_key=KEY) == 0
    with app.store.read() as conn:
        state = pipeline_queries.get_pipeline(conn, KEY)
    assert state is not None and state["last_promotion_at"] is not None
    assert one(samples, "zeroloop_last_promotion_timestamp_seconds", config_key=KEY) == state["last_promotion_at"]


def test_two_servers_over_one_store_agree(app: App, store_url: str, tmp_path: Path) -> None:
    populate(app)
    with (
        make_app(store_url, tmp_path / "other") as other,
        running_server(app, loopback=True) as first_url,
        running_server(other, loopback=True) as second_url,
    ):
        first, second = scrape(first_url), scrape(second_url)
    moving = {"zeroloop_node_heartbeat_age_seconds"}  # read at two moments
    assert {k: v for k, v in first.items() if k[0] not in moving} == {
        k: v for k, v in second.items() if k[0] not in moving
    }
    assert one(first, "zeroloop_queue_jobs", type="train", status="dead") == 1
