"""Model distribution for a worker that talks to the server: poll the production models and fetch new ones.

Over the store, `model_distribution` is a durable consumer of MODEL_PROMOTED. A worker
behind the server reads no event log; it asks for the production model of every
pipeline each interval instead and fetches (downloads and verifies) any it has not yet.
"""

from __future__ import annotations

import asyncio
from typing import Any

from zeroloop.daemons.daemon import Clock, DaemonContext, LoopDaemon
from zeroloop.remote.parts import RemoteArtifacts, RemoteModels


class RemotePrefetcher(LoopDaemon):
    """Fetches each production model into this node's cache once, polling every `interval_s` seconds."""

    def __init__(self, models: RemoteModels, artifacts: RemoteArtifacts, interval_s: float, *, clock: Clock) -> None:
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


def remote_prefetcher(context: DaemonContext) -> RemotePrefetcher | None:
    """The prefetcher over the server when this process's App is a RemoteApp; None over the store."""
    app = context.app
    if not isinstance(app.models, RemoteModels) or not isinstance(app.artifacts, RemoteArtifacts):
        return None
    return RemotePrefetcher(
        app.models, app.artifacts, 3 * app.settings.cluster.heartbeat_interval_s, clock=context.clock
    )
