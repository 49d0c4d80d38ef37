"""`/metrics` in the Prometheus text format, read from the store at scrape time.

A custom collector computes every figure from the store when Prometheus scrapes, so any
number of `zeroloop serve` processes answer the same numbers and none keeps state of its
own. Worker-side figures (utilisation) arrive with the node heartbeats, so one scrape of
one server sees the whole fleet. Counters (`*_total`) come from the store's lifetime
counters; take `rate()` of them in Prometheus. Off loopback the endpoint needs a viewer
token, which Prometheus sends with `authorization: {credentials: ...}`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from zeroloop.app import App
from zeroloop.cluster.health import HealthLevel
from zeroloop.control import views
from zeroloop.events.stats import stats as event_stats
from zeroloop.queue.backpressure import BackpressureLevel
from zeroloop.queue.jobs import JobStatus
from zeroloop.server import access
from zeroloop.store.queries import job_stats

_UTILISATION = (("cpu_pct", "cpu"), ("memory_pct", "memory"), ("disk_pct", "disk"), ("gpu_pct", "gpu"))


class StoreCollector(Collector):
    """Collects zeroloop's figures from the store of one App on every scrape."""

    def __init__(self, app: App) -> None:
        self.app = app

    def describe(self) -> list[Metric]:
        """Nothing up front: the families depend on what the store holds, so registering reads nothing."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Every metric family, read now."""
        yield from self._queue()
        yield from self._events()
        yield from self._nodes()
        yield from self._health()
        yield from self._pipelines()

    def _queue(self) -> Iterator[Metric]:
        app = self.app
        depth = GaugeMetricFamily(
            "zeroloop_queue_jobs", "Jobs in the queue by type and status.", labels=["type", "status"]
        )
        pressure = GaugeMetricFamily(
            "zeroloop_queue_backpressure_level",
            "Backpressure level per job type, as producers last recorded it: "
            + ", ".join(f"{level.value}={level.name}" for level in BackpressureLevel),
            labels=["type"],
        )
        for job_type, counts in sorted(app.queue.stats().items()):
            for status in JobStatus:
                depth.add_metric([job_type, status.value], counts.get(status.value, 0))
            pressure.add_metric([job_type], int(app.queue.backpressure.recorded(job_type)))
        yield depth
        yield pressure
        jobs = CounterMetricFamily(
            "zeroloop_jobs",
            "Job lifecycle transitions since the store was created, by config key, type and outcome.",
            labels=["config_key", "type", "outcome"],
        )
        with app.store.read() as conn:
            rows = job_stats.all_stats(conn)
        for row in rows:
            for outcome in job_stats.COUNTERS:
                jobs.add_metric([row["config_key"], row["job_type"], outcome], int(row[outcome]))
        yield jobs

    def _events(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "zeroloop_event_consumer_lag_events", "Events after a durable consumer's cursor.", labels=["consumer"]
        )
        for consumer, events in sorted(views.consumer_lag(self.app).items()):
            lag.add_metric([consumer], events)
        yield lag
        letters = GaugeMetricFamily("zeroloop_dead_letters", "Event dead letters by status.", labels=["status"])
        for status, count in sorted(event_stats(self.app.store).dead_letters.items()):
            letters.add_metric([status], count)
        yield letters

    def _nodes(self) -> Iterator[Metric]:
        found = views.nodes(self.app)
        by_status = GaugeMetricFamily("zeroloop_nodes", "Nodes by state.", labels=["status"])
        counts: dict[str, int] = {}
        for node in found:
            counts[node["status"]] = counts.get(node["status"], 0) + 1
        for status, count in sorted(counts.items()):
            by_status.add_metric([status], count)
        yield by_status
        load = GaugeMetricFamily(
            "zeroloop_node_utilisation_percent",
            "Utilisation a node reported with its last heartbeat (percent).",
            labels=["node", "resource"],
        )
        age = GaugeMetricFamily(
            "zeroloop_node_heartbeat_age_seconds", "Seconds since a node's last heartbeat.", labels=["node"]
        )
        price = GaugeMetricFamily(
            "zeroloop_node_cost_per_hour", "What a billed node costs (currency units per hour).", labels=["node"]
        )
        now = self.app.clock()
        for node in found:
            for key, resource in _UTILISATION:
                value = node["utilisation"].get(key)
                if isinstance(value, int | float) and math.isfinite(value):
                    load.add_metric([node["id"], resource], float(value))
            if node["heartbeat_at"] is not None:
                age.add_metric([node["id"]], max(0.0, now - float(node["heartbeat_at"])))
            if node["billed"] and node["cost_per_hour"] is not None:
                price.add_metric([node["id"]], float(node["cost_per_hour"]))
        yield load
        yield age
        yield price
        yield GaugeMetricFamily(
            "zeroloop_fleet_cost_per_hour",
            "What every billed node costs together (currency units per hour).",
            value=views.fleet_cost_per_hour(self.app),
        )

    def _health(self) -> Iterator[Metric]:
        health = views.health(self.app)
        yield GaugeMetricFamily("zeroloop_health_score", "System health score (0 to 1).", value=health["score"])
        level = GaugeMetricFamily("zeroloop_health_level", "1 for the current health level.", labels=["level"])
        for name in HealthLevel:
            level.add_metric([name.value], 1.0 if name.value == health["level"] else 0.0)
        yield level
        daemons = GaugeMetricFamily("zeroloop_daemons", "Daemons by state.", labels=["state"])
        restarts = GaugeMetricFamily(
            "zeroloop_daemon_restarts", "Restarts of a daemon in its current run.", labels=["node", "daemon"]
        )
        states: dict[str, int] = {}
        for daemon in views.daemons(self.app):
            states[daemon["state"]] = states.get(daemon["state"], 0) + 1
            restarts.add_metric([daemon["node"], daemon["name"]], daemon["restarts"])
        for state, count in sorted(states.items()):
            daemons.add_metric([state], count)
        yield daemons
        yield restarts

    def _pipelines(self) -> Iterator[Metric]:
        labels = ["config_key"]
        elo = GaugeMetricFamily(
            "zeroloop_production_elo", "Elo of the production model (random play = 0).", labels=labels
        )
        interval = GaugeMetricFamily(
            "zeroloop_production_elo_half_width", "Half-width of that Elo's interval (Elo points).", labels=labels
        )
        loss = GaugeMetricFamily("zeroloop_training_loss", "Loss of the latest training report.", labels=labels)
        speed = GaugeMetricFamily(
            "zeroloop_training_samples_per_second", "Training speed of the latest report (samples/s).", labels=labels
        )
        games = GaugeMetricFamily(
            "zeroloop_selfplay_games_per_second",
            f"Selfplay games per second over the last {views.SELFPLAY_RATE_WINDOW_S:.0f} s.",
            labels=labels,
        )
        games_total = CounterMetricFamily("zeroloop_selfplay_games", "Selfplay games stored.", labels=labels)
        samples = CounterMetricFamily("zeroloop_samples", "Training samples stored.", labels=labels)
        iteration = GaugeMetricFamily("zeroloop_pipeline_round", "The pipeline's round.", labels=labels)
        paused = GaugeMetricFamily("zeroloop_pipeline_paused", "1 while the pipeline is paused.", labels=labels)
        promoted = GaugeMetricFamily(
            "zeroloop_last_promotion_timestamp_seconds",
            "When the pipeline last promoted a model (epoch).",
            labels=labels,
        )
        rates = views.selfplay_games_per_s(self.app)
        for row in views.pipelines(self.app):
            key = [row["config_key"]]
            rating = row["rating"]
            if rating is not None and rating["elo"] is not None:
                elo.add_metric(key, rating["elo"])
                if rating["half_width"] is not None:
                    interval.add_metric(key, rating["half_width"])
            training = row["training"]
            if training.get("loss") is not None:
                loss.add_metric(key, float(training["loss"]))
            if training.get("samples_per_s") is not None:
                speed.add_metric(key, float(training["samples_per_s"]))
            games.add_metric(key, rates.get(row["config_key"], 0.0))
            games_total.add_metric(key, row["games_total"])
            samples.add_metric(key, row["samples_total"])
            iteration.add_metric(key, row["iteration"])
            paused.add_metric(key, 1.0 if row["paused"] else 0.0)
            if row["last_promotion_at"] is not None:
                promoted.add_metric(key, float(row["last_promotion_at"]))
        yield from (elo, interval, loss, speed, games, games_total, samples, iteration, paused, promoted)


router = APIRouter()


@router.get("/metrics")
def metrics(request: Request, _who: access.Viewer) -> Response:
    """Every figure in the Prometheus text format."""
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)


def registry_for(app: App) -> CollectorRegistry:
    """A registry (not the process-global one) that collects `app`'s figures."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(app))
    return registry
