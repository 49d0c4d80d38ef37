"""The SkyPilot provider: one SkyPilot cluster per node, on any cloud SkyPilot supports.

Each launch starts a SkyPilot cluster named `<prefix>-<pool>--<node id>` whose task runs
the worker command (`zeroloop worker ...`). The cluster's address and credentials reach
the worker as task environment variables; those whose names look secret (URL, TOKEN,
SECRET, PASSWORD, KEY, CREDENTIAL, plus `options.secret_env`) go in the task's
`secrets`, which SkyPilot keeps out of its logs and dashboard, and none is ever part of
the run command. Resources come from the pool: GPUs (`options.accelerators`, e.g.
"A100", counted by the pool's `gpus`), CPUs and memory as minimums, cloud, region, spot
or on-demand, disk and image.

SkyPilot's autodown is a second safety net behind zeroloop's idle shutdown: a cluster
whose worker has exited is torn down after `options.autostop_minutes` idle minutes,
even if no coordinator is left to terminate it.

`sky` is an optional dependency (`pip install 'zeroloop[skypilot]'`), imported only when
the provider first talks to SkyPilot, through `SkyClient`, the one small adapter that
calls it; tests replace the adapter with a fake. The task's generation (`task_config`),
the status mapping (`machine_state`) and the error mapping (`provider_error`) are plain
functions that need no SkyPilot. docs/providers/skypilot.md walks through a pool.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import re
import shlex
from typing import Any, Protocol

from pydantic import BaseModel, Field

from zeroloop.config import PoolSettings
from zeroloop.errors import ConfigError
from zeroloop.fleet.providers.base import (
    Launched,
    LaunchSpec,
    Machine,
    MachineState,
    Offer,
    Provider,
    ProviderError,
)

log = logging.getLogger(__name__)

INSTALL_HINT = "SkyPilot is not installed here; install zeroloop[skypilot] (pip install 'zeroloop[skypilot]')"
TASK_NAME = "zeroloop-worker"
# Names of worker variables that carry credentials: they go in the task's secrets.
SECRET_NAME = re.compile(r"URL|TOKEN|SECRET|PASSWORD|PASSWD|KEY|CREDENTIAL", re.IGNORECASE)
# A pool name, and a node id, as they may appear in a cluster name: no "--", which separates them.
POOL_NAME = re.compile(r"[A-Za-z0-9]+(?:[-_.][A-Za-z0-9]+)*")
NODE_ID = re.compile(r"[A-Za-z0-9](?:[-_.A-Za-z0-9]*[A-Za-z0-9])?")

STATES = {
    "INIT": MachineState.PENDING,  # provisioning or setting up (or broken: SkyPilot cannot tell which)
    "PENDING": MachineState.PENDING,  # waiting to be scheduled
    "UP": MachineState.RUNNING,
    "STOPPED": MachineState.FAILED,  # not running, its disk still billed: zeroloop never stops, it downs
}

# What each SkyPilot exception means, by class name, so the mapping needs no SkyPilot.
ERRORS = {
    "ResourcesUnavailableError": "no cloud SkyPilot may use has the requested resources now; "
    "relax options.accelerators, cloud, region or use_spot, or try again later",
    "ResourcesMismatchError": "a cluster of that name already exists with other resources",
    "NotSupportedError": "SkyPilot does not support this request on the chosen cloud",
    "ClusterNotUpError": "the cluster is not up",
    "ClusterDoesNotExist": "the cluster does not exist",
    "ClusterSetUpError": "the cluster's setup commands failed (options.setup)",
    "NoCloudAccessError": "SkyPilot has no cloud enabled; set up credentials and run `sky check`",
    "CloudUserIdentityError": "SkyPilot cannot read the cloud identity; check the credentials with `sky check`",
    "ClusterOwnerIdentityMismatchError": "the cluster belongs to another cloud identity",
    "InvalidClusterNameError": "the cluster name is not valid for SkyPilot",
    "ApiServerConnectionError": "the SkyPilot API server cannot be reached; start it with `sky api start`",
    "CommandError": "a command on the cluster failed",
}


class SkyPilotOptions(BaseModel):
    """Options of a SkyPilot pool: where and on what its clusters run."""

    model_config = {"extra": "forbid"}

    accelerators: str | None = Field(
        default=None,
        description='GPU type, e.g. "A100" (count from the pool\'s gpus) or "A100:8"; unset: no GPU',
    )
    cloud: str | None = Field(default=None, description="e.g. aws, gcp, lambda, runpod, vast, nebius, kubernetes")
    region: str | None = Field(default=None, description="the cloud's region; unset: any")
    use_spot: bool = Field(default=False, description="spot (preemptible) machines instead of on-demand ones")
    disk_gb: int | None = Field(default=None, ge=1, description="boot disk size (GB); unset: SkyPilot's default")
    image: str | None = Field(default=None, description='image_id, e.g. "docker:ghcr.io/me/zeroloop:latest"')
    setup: str | None = Field(
        default=None, description='shell commands run once before the worker, e.g. "pip install zeroloop"'
    )
    autostop_minutes: int | None = Field(
        default=15, ge=1, description="idle minutes after the worker exits before SkyPilot tears the cluster down"
    )
    retry_until_up: bool = Field(default=False, description="let SkyPilot retry a launch until resources appear")
    cluster_prefix: str = Field(
        default="zl", pattern=r"^[a-z][a-z0-9]*$", description="first part of every cluster name of this pool"
    )
    secret_env: list[str] = Field(
        default_factory=list, description="further worker variables to pass as SkyPilot secrets"
    )


def accelerators(pool_name: str, pool: PoolSettings, options: SkyPilotOptions) -> str | None:
    """The pool's GPUs as SkyPilot's "TYPE:COUNT" (e.g. "A100:2"); ConfigError when gpus and options disagree."""
    where = f"providers.{pool_name}"
    if options.accelerators is None:
        if pool.gpus:
            raise ConfigError(
                f'{where}: gpus = {pool.gpus} needs options.accelerators naming the GPU type (e.g. "A100")'
            )
        return None
    kind, _, count = options.accelerators.rpartition(":")
    if not kind or not count.isdigit():
        return f"{options.accelerators}:{pool.gpus or 1}"  # a type alone is one GPU to SkyPilot as well
    if pool.gpus and int(count) != pool.gpus:
        raise ConfigError(
            f"{where}: gpus = {pool.gpus} but options.accelerators = {options.accelerators!r}; "
            f"give the type alone (e.g. {kind!r}) or make the counts agree"
        )
    return options.accelerators


def cluster_name(prefix: str, pool_name: str, node_id: str) -> str:
    """The SkyPilot cluster of node `node_id` in pool `pool_name`."""
    return f"{prefix}-{pool_name}--{node_id}"


def task_config(pool_name: str, pool: PoolSettings, options: SkyPilotOptions, spec: LaunchSpec) -> dict[str, Any]:
    """The SkyPilot task (its YAML as a dict) that runs `spec`'s worker on one machine of the pool."""
    worker_env = {**spec.env, "ZEROLOOP_CLUSTER__POOL": pool_name}
    extra_secrets = set(options.secret_env)
    secrets = {k: v for k, v in worker_env.items() if k in extra_secrets or SECRET_NAME.search(k)}
    envs = {k: v for k, v in worker_env.items() if k not in secrets}
    resources: dict[str, Any] = {}
    if options.cloud:
        resources["cloud"] = options.cloud
    if options.region:
        resources["region"] = options.region
    gpus = accelerators(pool_name, pool, options)
    if gpus:
        resources["accelerators"] = gpus
    if spec.cpus:
        resources["cpus"] = f"{spec.cpus}+"
    if spec.memory_bytes:
        resources["memory"] = f"{spec.memory_bytes / 2**30:g}+"
    resources["use_spot"] = options.use_spot
    if options.disk_gb is not None:
        resources["disk_size"] = options.disk_gb
    if options.image:
        resources["image_id"] = options.image
    config: dict[str, Any] = {
        "name": TASK_NAME,
        "num_nodes": 1,
        "resources": resources,
        "envs": envs,
        "secrets": secrets,
        "run": shlex.join(spec.argv),
    }
    if options.setup:
        config["setup"] = options.setup
    return config


def machine_state(status: str) -> MachineState:
    """The MachineState of a SkyPilot cluster status (INIT, PENDING, UP, STOPPED); unknown ones count as failed."""
    return STATES.get(status.upper(), MachineState.FAILED)


def error_name(exc: BaseException) -> str | None:
    """The SkyPilot exception class `exc` is, or derives from, when ERRORS knows it."""
    for klass in type(exc).__mro__:
        if klass.__name__ in ERRORS:
            return klass.__name__
    return None


def provider_error(exc: BaseException, *, pool_name: str, doing: str) -> ProviderError:
    """One ProviderError line saying what SkyPilot's `exc` means while `doing` something for the pool."""
    name = error_name(exc)
    meaning = ERRORS[name] if name else "SkyPilot failed"
    lines = str(exc).strip().splitlines()
    detail = " ".join(lines[0].split())[:300] if lines else ""
    return ProviderError(f"skypilot pool {pool_name}: {doing}: {meaning} ({type(exc).__name__}: {detail or '-'})")


class SkyAdapter(Protocol):
    """The calls the provider makes into SkyPilot; `SkyClient` makes them for real, tests fake them."""

    def launch(
        self, config: dict[str, Any], cluster: str, *, autostop_minutes: int | None, retry_until_up: bool
    ) -> str:
        """Launch `config` on a new cluster and wait until its task started; the head node's address."""

    def down(self, cluster: str) -> None:
        """Tear the cluster down (all billing stops)."""

    def clusters(self) -> list[tuple[str, str]]:
        """(name, status) of every cluster SkyPilot knows for this user, status as INIT, UP, STOPPED, ..."""

    def enabled_clouds(self) -> list[str]:
        """The clouds SkyPilot has working credentials for."""


class SkyClient:
    """The adapter over the installed `sky` package (SkyPilot's client SDK, which talks to its API server)."""

    def __init__(self) -> None:
        """ProviderError when SkyPilot is not installed."""
        try:
            import sky
            from sky.client import sdk
        except ImportError as exc:
            raise ProviderError(f"{INSTALL_HINT} ({exc})") from exc
        self._sky: Any = sky
        self._sdk: Any = sdk

    def launch(
        self, config: dict[str, Any], cluster: str, *, autostop_minutes: int | None, retry_until_up: bool
    ) -> str:
        """Submit the launch and wait for its result (minutes: provisioning, setup, then the run starts)."""
        task = self._sky.Task.from_yaml_config(copy.deepcopy(config))
        request = self._sky.launch(
            task,
            cluster_name=cluster,
            retry_until_up=retry_until_up,
            idle_minutes_to_autostop=autostop_minutes,
            down=autostop_minutes is not None,
        )
        _job_id, handle = self._sky.get(request)
        return str(getattr(handle, "head_ip", None) or "")

    def down(self, cluster: str) -> None:
        """Tear the cluster down and wait until it is gone."""
        self._sky.get(self._sky.down(cluster))

    def clusters(self) -> list[tuple[str, str]]:
        """Every cluster of this user, refreshed from the cloud where autostop or spot may have changed it."""
        records = self._sky.get(self._sky.status(refresh=self._sky.StatusRefreshMode.AUTO))
        return [(str(r["name"]), str(getattr(r["status"], "value", r["status"]))) for r in records]

    def enabled_clouds(self) -> list[str]:
        """The clouds `sky check` found usable."""
        return [str(cloud) for cloud in self._sky.get(self._sdk.enabled_clouds())]


class SkyPilotProvider(Provider):
    """Launches one SkyPilot cluster per node and tears it down on terminate."""

    kind = "skypilot"
    Options = SkyPilotOptions

    def __init__(self, name: str, pool: PoolSettings, *, sky: SkyAdapter | None = None) -> None:
        """`sky` is the SkyPilot adapter; unset, a `SkyClient` is made on first use."""
        super().__init__(name, pool)
        if not POOL_NAME.fullmatch(name):
            raise ConfigError(
                f"providers.{name}: a skypilot pool's name may hold only letters, digits and single -, _ or . "
                "between them (it is part of every cluster name)"
            )
        accelerators(name, pool, self.options)  # refuse disagreeing GPU settings now, not at launch
        self._sky = sky

    @property
    def sky(self) -> SkyAdapter:
        """The adapter, made on first use; ProviderError saying to install zeroloop[skypilot] without SkyPilot."""
        if self._sky is None:
            try:
                self._sky = SkyClient()
            except ProviderError as exc:
                raise ProviderError(f"skypilot pool {self.name}: {exc}") from exc
        return self._sky

    @property
    def _prefix(self) -> str:
        return cluster_name(self.options.cluster_prefix, self.name, "")

    def check(self) -> None:
        """ProviderError when SkyPilot is missing, has no cloud, or lacks the pool's cloud."""
        sky = self.sky
        try:
            enabled = sky.enabled_clouds()
        except Exception as exc:  # SkyPilot raises many unrelated types: each is mapped
            raise provider_error(exc, pool_name=self.name, doing="checking the enabled clouds") from exc
        if not enabled:
            raise ProviderError(f"skypilot pool {self.name}: {ERRORS['NoCloudAccessError']}")
        wanted = self.options.cloud
        if wanted and wanted.lower() not in {cloud.lower() for cloud in enabled}:
            raise ProviderError(
                f"skypilot pool {self.name}: cloud {wanted!r} is not enabled in SkyPilot (enabled: "
                f"{', '.join(enabled)}); set up its credentials and run `sky check {wanted}`"
            )

    def launch(self, spec: LaunchSpec) -> Launched:
        """Launch the node's cluster and wait until its worker started; on failure nothing is left behind."""
        if not NODE_ID.fullmatch(spec.node_id):
            raise ProviderError(
                f"skypilot pool {self.name}: node id {spec.node_id!r} cannot name a SkyPilot cluster; "
                "use letters, digits, -, _ and . only, starting and ending with a letter or digit"
            )
        cluster = cluster_name(self.options.cluster_prefix, self.name, spec.node_id)
        config = task_config(self.name, self.pool, self.options, spec)
        sky = self.sky
        try:
            host = sky.launch(
                config,
                cluster,
                autostop_minutes=self.options.autostop_minutes,
                retry_until_up=self.options.retry_until_up,
            )
        except Exception as exc:  # SkyPilot raises many unrelated types: each is mapped
            error = provider_error(exc, pool_name=self.name, doing=f"launching cluster {cluster}")
            self._clean_up(cluster, error)
            raise error from exc
        log.info("skypilot pool %s: cluster %s is up for node %s", self.name, cluster, spec.node_id)
        return Launched(provider_id=cluster, host=host, price_per_hour=self.pool.price_per_hour)

    def _clean_up(self, cluster: str, error: ProviderError) -> None:
        """Tear down what a failed launch may have left (SkyPilot keeps it for debugging); say so if that fails."""
        try:
            self.sky.down(cluster)
        except Exception as exc:  # SkyPilot raises many unrelated types: each is mapped
            if error_name(exc) == "ClusterDoesNotExist":
                return
            raise ProviderError(
                f"{error}; tearing down what it left failed as well ({type(exc).__name__}: {exc}); "
                f"run `sky down {cluster}`"
            ) from exc

    def terminate(self, provider_id: str) -> None:
        """Tear the cluster down; a cluster already gone is fine."""
        sky = self.sky
        try:
            sky.down(provider_id)
        except Exception as exc:  # SkyPilot raises many unrelated types: each is mapped
            if error_name(exc) == "ClusterDoesNotExist":
                return
            raise provider_error(exc, pool_name=self.name, doing=f"tearing down cluster {provider_id}") from exc

    def machines(self) -> list[Machine]:
        """The clusters of this pool SkyPilot knows, with the node id read back from each name."""
        sky = self.sky
        try:
            clusters = sky.clusters()
        except Exception as exc:  # SkyPilot raises many unrelated types: each is mapped
            raise provider_error(exc, pool_name=self.name, doing="listing clusters") from exc
        prefix = self._prefix
        return [
            Machine(
                provider_id=name, state=machine_state(status), node_id=name[len(prefix) :], detail=f"SkyPilot {status}"
            )
            for name, status in clusters
            if name.startswith(prefix)
        ]

    def offers(self) -> list[Offer]:
        """The pool's own offer, with its GPU type and count and its spot flag."""
        gpus = accelerators(self.name, self.pool, self.options)
        gpu_type, _, count = gpus.rpartition(":") if gpus else ("", "", "0")
        return [
            dataclasses.replace(offer, gpus=int(count), gpu_type=gpu_type, spot=self.options.use_spot)
            for offer in super().offers()
        ]
