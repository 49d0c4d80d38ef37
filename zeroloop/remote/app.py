"""A worker process's parts over `zeroloop serve`: the worker-side subset of the App, with no store at all.

`RemoteApp(settings)` asks the server for the settings a worker must share with the
cluster (the workload and queue sections), then offers the same attributes the worker
profiles' daemons use on an App: settings, queue, bus, artifacts, registry, nodes,
daemon_records and daemons, each satisfying its port in zeroloop.ports. Nothing else of
the App exists here, so a worker given only a server URL and a token can reach nothing else.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from zeroloop.artifacts.cache import LocalCache
from zeroloop.config import QueueSettings, Settings, WorkloadSettings
from zeroloop.daemons.manager import DaemonManager
from zeroloop.remote.client import ServerClient
from zeroloop.remote.parts import (
    RemoteArtifacts,
    RemoteBus,
    RemoteDaemonRecords,
    RemoteModels,
    RemoteNodes,
    RemoteQueue,
)


class RemoteApp:
    """Everything a worker process has open when it talks to the server instead of the store."""

    def __init__(self, settings: Settings) -> None:
        """Connect to `settings.server.url` as `settings.cluster.node_id` and fetch the shared settings."""
        self.client = ServerClient(settings.server, settings.cluster.node_id, credentials=True)
        try:
            shared = self.client.call("GET", "/settings")
            self.settings = settings.model_copy(
                update={
                    "workload": WorkloadSettings.model_validate(shared["workload"]),
                    "queue": QueueSettings.model_validate(shared["queue"]),
                }
            )
        except BaseException:
            self.client.close()
            raise
        self.queue = RemoteQueue(self.client)
        self.bus = RemoteBus(self.client)
        self.nodes = RemoteNodes(self.client)
        self.models = RemoteModels(self.client)
        self.daemon_records = RemoteDaemonRecords(self.client)
        self.artifacts = RemoteArtifacts(
            self.client, LocalCache(settings.data_dir / "cache", settings.artifacts.cache_max_bytes)
        )
        self.daemons: DaemonManager[Any] | None = None  # set by bootstrap.initialize_all_coordinators

    def close(self) -> None:
        """Close the kept-alive connections."""
        self.client.close()

    def __enter__(self) -> RemoteApp:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
