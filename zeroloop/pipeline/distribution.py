"""Model distribution: every worker polls the production models and fetches each new one into its cache.

One code path on a trusted network and behind `zeroloop serve`: the daemon asks its
ModelPort (the registry over the store, or the server) for the production model of
every config key each interval and fetches (downloads and verifies) any it has not yet,
so selfplay on a new model starts without waiting for the download. It keeps no
durable consumer per node, so a node that is gone leaves nothing behind in the event log.
"""

from __future__ import annotations

import asyncio
from typing import Any

from zeroloop.daemons.daemon import Clock, DaemonContext, LoopDaemon
from zeroloop.ports import ArtifactPort, ModelPort, WorkerParts


class ModelPrefetcher(LoopDaemon):
    """Fetches each production model into this node's cache once, polling every `interval_s` seconds."""

    def __init__(self, models: ModelPort, artifacts: ArtifactPort, interval_s: float, *, clock: Clock) -> None:
        super().__init__(interval_s, clock=clock)
        self.models = models
        self.artifacts = artifacts
        self.seen: set[str] = set()
        self.fetched = 0

    async def tick(self) -> None:
        """One poll: fetch the production models not fetched yet."""
        for model in await asyncio.to_thread(self.models.productions):
            if model.artifact_sha256 not in self.seen:
                await asyncio.to_thread(self.artifacts.fetch, model.artifact_sha256)
                self.seen.add(model.artifact_sha256)
                self.fetched += 1

    def details(self) -> dict[str, Any]:
        """How many models were fetched."""
        return {"fetched": self.fetched}


def model_distribution_daemon(context: DaemonContext[WorkerParts]) -> ModelPrefetcher:
    """Factory of `model_distribution`: polls every three heartbeat intervals."""
    parts = context.parts
    interval_s = 3 * parts.settings.cluster.heartbeat_interval_s
    return ModelPrefetcher(parts.models, parts.artifacts, interval_s, clock=context.clock)
