"""Model distribution: every worker polls the production models and keeps each one in its cache.

One code path on a trusted network and behind `zeroloop serve`: the daemon asks its
ModelPort (the registry over the store, or the server) for the production model of
every config key each interval and fetches (downloads and verifies) any its cache does not
hold, so selfplay on a new model starts without waiting for the download. A model the
cache evicted since (a disk that filled) is fetched again: what counts is the cache now,
not what was fetched once. It keeps no durable consumer per node, so a node that is gone
leaves nothing behind in the event log.

What the node holds is the seeds' delivery ledger: the daemon's health details name, per
config key, the production model's artifact in this node's cache (`holds`), and the
daemon manager records them with the node's daemon rows (through the store or the
server alike); `zeroloop nodes ls` and the dashboard's nodes page show them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from zeroloop.daemons.daemon import Clock, DaemonContext, LoopDaemon
from zeroloop.ports import ArtifactPort, ModelPort, WorkerParts

NAME = "model_distribution"


class ModelPrefetcher(LoopDaemon):
    """Keeps each production model in this node's cache, polling every `interval_s` seconds."""

    def __init__(self, models: ModelPort, artifacts: ArtifactPort, interval_s: float, *, clock: Clock) -> None:
        super().__init__(interval_s, clock=clock)
        self.models = models
        self.artifacts = artifacts
        self.holds: dict[str, str] = {}  # config key -> sha256 of its production model, in this node's cache
        self.fetched = 0

    async def tick(self) -> None:
        """One poll: fetch the production models the cache does not hold (any more)."""
        holds = {}
        for model in await asyncio.to_thread(self.models.productions):
            sha256 = model.artifact_sha256
            if await asyncio.to_thread(self.artifacts.cache.get, sha256) is None:
                await asyncio.to_thread(self.artifacts.fetch, sha256)
                self.fetched += 1
            holds[model.config_key] = sha256
        self.holds = holds

    def details(self) -> dict[str, Any]:
        """How many downloads, and the delivery ledger: config key -> the production model held (sha256)."""
        return {"fetched": self.fetched, "holds": dict(self.holds)}


def model_distribution_daemon(context: DaemonContext[WorkerParts]) -> ModelPrefetcher:
    """Factory of `model_distribution`: polls every three heartbeat intervals."""
    parts = context.parts
    interval_s = 3 * parts.settings.cluster.heartbeat_interval_s
    return ModelPrefetcher(parts.models, parts.artifacts, interval_s, clock=context.clock)
