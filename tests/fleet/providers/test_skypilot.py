"""The SkyPilot provider without SkyPilot: task generation, status and error mapping, launches through a fake.

A fake adapter stands where `SkyClient` calls SkyPilot; it raises exceptions named like
SkyPilot's, which is all the error mapping looks at. A live test launches real
(billed) clusters only where SkyPilot is installed, `sky check` finds a cloud and
ZEROLOOP_TEST_SKYPILOT=1 asks for it.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.fleet.providers.contract import ProviderContract
from zeroloop.config import PoolSettings
from zeroloop.errors import ConfigError
from zeroloop.fleet.providers.base import LaunchSpec, MachineState, ProviderError
from zeroloop.fleet.providers.skypilot import (
    SkyClient,
    SkyPilotOptions,
    SkyPilotProvider,
    machine_state,
    provider_error,
    task_config,
)


# Exceptions named like SkyPilot's (sky.exceptions); the mapping goes by class name.
class ResourcesUnavailableError(Exception):
    pass


class NotSupportedError(Exception):
    pass


class ClusterNotUpError(Exception):
    pass


class ClusterDoesNotExist(ValueError):
    pass


class NoCloudAccessError(Exception):
    pass


class ApiServerConnectionError(RuntimeError):
    pass


@dataclass
class Launch:
    config: dict[str, Any]
    cluster: str
    autostop_minutes: int | None
    retry_until_up: bool


@dataclass
class FakeSky:
    """SkyPilot as the provider sees it: clusters by name with a status, and the launches asked for."""

    clouds: list[str] = field(default_factory=lambda: ["AWS", "Kubernetes"])
    clusters_now: dict[str, str] = field(default_factory=dict)
    launches: list[Launch] = field(default_factory=list)
    fail_launch: Exception | None = None
    fail_down: Exception | None = None

    def launch(
        self, config: dict[str, Any], cluster: str, *, autostop_minutes: int | None, retry_until_up: bool
    ) -> str:
        self.launches.append(Launch(json.loads(json.dumps(config)), cluster, autostop_minutes, retry_until_up))
        self.clusters_now[cluster] = "INIT"  # provisioning starts before SkyPilot can fail
        if self.fail_launch is not None:
            raise self.fail_launch
        self.clusters_now[cluster] = "UP"
        return "10.0.0.7"

    def down(self, cluster: str) -> None:
        if self.fail_down is not None:
            raise self.fail_down
        if cluster not in self.clusters_now:
            raise ClusterDoesNotExist(f"Cluster {cluster!r} does not exist.")
        del self.clusters_now[cluster]

    def clusters(self) -> list[tuple[str, str]]:
        return sorted(self.clusters_now.items())

    def enabled_clouds(self) -> list[str]:
        return list(self.clouds)


def pool(**overrides: Any) -> PoolSettings:
    settings: dict[str, Any] = {"kind": "skypilot", "max_nodes": 2, "price_per_hour": 2.5}
    settings.update(overrides)
    return PoolSettings(**settings)


def spec(node_id: str = "n1", env: dict[str, str] | None = None, **overrides: Any) -> LaunchSpec:
    return LaunchSpec(
        node_id=node_id,
        pool="gpu",
        profile="training_node",
        argv=("zeroloop", "worker", "--profile", "training_node"),
        env=env if env is not None else {"ZEROLOOP_CLUSTER__NODE_ID": node_id},
        **overrides,
    )


def provider(sky: FakeSky, name: str = "gpu", **options: Any) -> SkyPilotProvider:
    return SkyPilotProvider(name, pool(options=options), sky=sky)


class TestSkyPilotContractOverAFake(ProviderContract):
    settle_s = 1.0

    @pytest.fixture
    def provider(self) -> SkyPilotProvider:
        return SkyPilotProvider("gpu", pool(), sky=FakeSky())


# --- task generation ---------------------------------------------------------------------------


def test_an_on_demand_cpu_task_runs_the_worker_with_minimum_cpus_and_memory() -> None:
    options = SkyPilotOptions(cloud="aws", region="us-east-1")
    config = task_config("cpu", pool(), options, spec(cpus=8, memory_bytes=32 * 2**30))
    assert config["run"] == "zeroloop worker --profile training_node"
    assert config["num_nodes"] == 1
    assert config["name"] == "zeroloop-worker"
    assert config["resources"] == {
        "cloud": "aws",
        "region": "us-east-1",
        "cpus": "8+",
        "memory": "32+",
        "use_spot": False,
    }
    assert "setup" not in config


def test_a_spot_gpu_task_takes_its_gpus_disk_image_and_setup_from_the_pool() -> None:
    options = SkyPilotOptions(
        accelerators="H100", use_spot=True, disk_gb=200, image="docker:ghcr.io/me/zl:1", setup="pip install zeroloop"
    )
    config = task_config("gpu", pool(gpus=8), options, spec())
    assert config["resources"] == {
        "accelerators": "H100:8",
        "use_spot": True,
        "disk_size": 200,
        "image_id": "docker:ghcr.io/me/zl:1",
    }
    assert config["setup"] == "pip install zeroloop"
    assert (
        task_config("gpu", pool(gpus=1), SkyPilotOptions(accelerators="A100:1"), spec())["resources"]["accelerators"]
        == "A100:1"
    )


def test_credentials_go_in_secrets_and_never_in_the_run_command() -> None:
    env = {
        "ZEROLOOP_STORE__URL": "postgresql://zl:pw-123@db:5432/zl",
        "ZEROLOOP_SERVER__TOKEN": "tok-456",
        "AWS_SECRET_ACCESS_KEY": "aws-789",
        "HF_HOME": "/cache/hf-000",
        "ZEROLOOP_CLUSTER__NODE_ID": "n1",
    }
    options = SkyPilotOptions(secret_env=["HF_HOME"])
    config = task_config("gpu", pool(), options, spec(env=env))
    assert config["secrets"] == {
        "ZEROLOOP_STORE__URL": "postgresql://zl:pw-123@db:5432/zl",
        "ZEROLOOP_SERVER__TOKEN": "tok-456",
        "AWS_SECRET_ACCESS_KEY": "aws-789",
        "HF_HOME": "/cache/hf-000",
    }
    assert config["envs"] == {"ZEROLOOP_CLUSTER__NODE_ID": "n1", "ZEROLOOP_CLUSTER__POOL": "gpu"}
    outside_secrets = json.dumps({k: v for k, v in config.items() if k != "secrets"})
    for secret in ("pw-123", "tok-456", "aws-789", "hf-000"):
        assert secret not in outside_secrets


def test_gpu_settings_that_disagree_are_refused_when_the_pool_is_read() -> None:
    with pytest.raises(ConfigError, match=r'providers\.gpu: gpus = 2 needs options\.accelerators .*"A100"'):
        SkyPilotProvider("gpu", pool(gpus=2), sky=FakeSky())
    with pytest.raises(ConfigError, match=r"providers\.gpu: gpus = 2 but options\.accelerators = 'A100:4'"):
        SkyPilotProvider("gpu", pool(gpus=2, options={"accelerators": "A100:4"}), sky=FakeSky())
    with pytest.raises(ConfigError, match=r"providers\.gpu\.options\.use_spots"):
        SkyPilotProvider("gpu", pool(options={"use_spots": True}), sky=FakeSky())


def test_pool_names_and_node_ids_must_fit_a_cluster_name() -> None:
    with pytest.raises(ConfigError, match=r"providers\.a--b: a skypilot pool's name may hold only"):
        SkyPilotProvider("a--b", pool(), sky=FakeSky())
    sky = FakeSky()
    with pytest.raises(ProviderError, match=r"node id 'n 1' cannot name a SkyPilot cluster"):
        provider(sky).launch(spec(node_id="n 1"))
    assert sky.launches == []


# --- status and error mapping --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("INIT", MachineState.PENDING),
        ("PENDING", MachineState.PENDING),
        ("UP", MachineState.RUNNING),
        ("STOPPED", MachineState.FAILED),
        ("SOMETHING_NEW", MachineState.FAILED),
    ],
)
def test_cluster_statuses_map_to_machine_states(status: str, state: MachineState) -> None:
    assert machine_state(status) is state


def test_machines_lists_this_pools_clusters_with_their_nodes_and_absent_ones_not_at_all() -> None:
    sky = FakeSky(
        clusters_now={
            "zl-gpu--n1": "UP",
            "zl-gpu--n2": "INIT",
            "zl-gpu--n3": "STOPPED",
            "zl-gpu-big--n4": "UP",  # another pool whose name starts the same
            "my-notebook": "UP",  # not zeroloop's
        }
    )
    machines = {m.provider_id: m for m in provider(sky).machines()}
    assert sorted(machines) == ["zl-gpu--n1", "zl-gpu--n2", "zl-gpu--n3"]
    assert machines["zl-gpu--n1"].state is MachineState.RUNNING
    assert machines["zl-gpu--n1"].node_id == "n1"
    assert machines["zl-gpu--n2"].state is MachineState.PENDING
    assert machines["zl-gpu--n3"].state is MachineState.FAILED
    assert machines["zl-gpu--n3"].detail == "SkyPilot STOPPED"


@pytest.mark.parametrize(
    ("error", "meaning"),
    [
        (ResourcesUnavailableError("Failed to acquire resources in all zones"), "no cloud SkyPilot may use has"),
        (NotSupportedError("stop is not supported"), "SkyPilot does not support this request"),
        (ClusterNotUpError("cluster is INIT"), "the cluster is not up"),
        (NoCloudAccessError("no clouds"), "run `sky check`"),
        (ApiServerConnectionError("refused"), "start it with `sky api start`"),
        (RuntimeError("disk full\nTraceback ..."), "SkyPilot failed"),
    ],
)
def test_skypilot_errors_map_to_one_clear_line(error: Exception, meaning: str) -> None:
    message = str(provider_error(error, pool_name="gpu", doing="launching cluster zl-gpu--n1"))
    assert message.startswith("skypilot pool gpu: launching cluster zl-gpu--n1: ")
    assert meaning in message
    assert f"({type(error).__name__}: {str(error).splitlines()[0]})" in message
    assert "\n" not in message


def test_an_error_deriving_from_a_skypilot_error_maps_like_it() -> None:
    class ClusterOwnerIdentityMismatchError(Exception):
        pass

    class Narrower(ClusterOwnerIdentityMismatchError):
        pass

    assert "another cloud identity" in str(provider_error(Narrower("x"), pool_name="gpu", doing="listing"))


# --- launches through the fake --------------------------------------------------------------------


def test_a_launch_sets_autodown_and_names_the_cluster_after_pool_and_node() -> None:
    sky = FakeSky()
    launched = provider(sky, autostop_minutes=20, retry_until_up=True).launch(spec("n7"))
    assert launched.provider_id == "zl-gpu--n7"
    assert launched.host == "10.0.0.7"
    assert launched.price_per_hour == 2.5
    [launch] = sky.launches
    assert (launch.cluster, launch.autostop_minutes, launch.retry_until_up) == ("zl-gpu--n7", 20, True)
    assert launch.config["run"] == shlex.join(spec().argv)
    provider(sky, cluster_prefix="lab").launch(spec("n8"))
    assert sky.launches[-1].autostop_minutes == 15  # autodown is on unless switched off
    assert sky.launches[-1].cluster == "lab-gpu--n8"


def test_autostop_can_be_switched_off() -> None:
    sky = FakeSky()
    provider(sky, autostop_minutes=None).launch(spec())
    assert sky.launches[0].autostop_minutes is None


def test_a_launch_without_resources_is_a_clear_error_and_leaves_nothing_behind() -> None:
    sky = FakeSky(fail_launch=ResourcesUnavailableError("Failed to provision all possible launchable resources."))
    fleet = provider(sky, accelerators="H100:8", use_spot=True)
    with pytest.raises(ProviderError, match=r"launching cluster zl-gpu--n1: no cloud SkyPilot may use has the"):
        fleet.launch(spec())
    assert sky.clusters_now == {}  # the half-made INIT cluster was torn down
    assert fleet.machines() == []


def test_a_failed_launch_whose_clean_up_fails_too_says_how_to_clean_up() -> None:
    sky = FakeSky(fail_launch=ResourcesUnavailableError("none"), fail_down=ApiServerConnectionError("refused"))
    with pytest.raises(ProviderError, match=r"tearing down what it left failed as well .*run `sky down zl-gpu--n1`"):
        provider(sky).launch(spec())


def test_terminate_downs_the_cluster_and_an_absent_one_is_fine() -> None:
    sky = FakeSky(clusters_now={"zl-gpu--n1": "UP"})
    fleet = provider(sky)
    fleet.terminate("zl-gpu--n1")
    assert sky.clusters_now == {}
    fleet.terminate("zl-gpu--n1")  # gone already: SkyPilot says it does not exist
    sky.fail_down = ClusterNotUpError("being provisioned")
    with pytest.raises(ProviderError, match=r"tearing down cluster zl-gpu--n2: the cluster is not up"):
        fleet.terminate("zl-gpu--n2")


def test_offers_describe_the_pools_gpus_and_spot() -> None:
    [offer] = SkyPilotProvider("gpu", pool(gpus=8, options={"accelerators": "H100", "use_spot": True})).offers()
    assert (offer.gpus, offer.gpu_type, offer.spot, offer.price_per_hour) == (8, "H100", True, 2.5)


# --- check ---------------------------------------------------------------------------------------


def test_check_wants_the_pools_cloud_enabled() -> None:
    provider(FakeSky(), cloud="aws").check()
    with pytest.raises(ProviderError, match=r"cloud 'lambda' is not enabled in SkyPilot .*run `sky check lambda`"):
        provider(FakeSky(), cloud="lambda").check()
    with pytest.raises(ProviderError, match=r"SkyPilot has no cloud enabled"):
        provider(FakeSky(clouds=[])).check()
    unreachable = FakeSky()
    unreachable.enabled_clouds = lambda: (_ for _ in ()).throw(ApiServerConnectionError("refused"))  # type: ignore[method-assign]
    with pytest.raises(ProviderError, match=r"checking the enabled clouds: the SkyPilot API server cannot be reached"):
        provider(unreachable).check()


def test_without_skypilot_installed_check_and_launch_say_to_install_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sky", None)  # makes `import sky` fail as if it were not installed
    fleet = SkyPilotProvider("gpu", pool())
    with pytest.raises(
        ProviderError, match=r"skypilot pool gpu: SkyPilot is not installed here; install zeroloop\[skypilot\]"
    ):
        fleet.check()
    with pytest.raises(ProviderError, match=r"install zeroloop\[skypilot\]"):
        fleet.launch(spec())


# --- the adapter over the SkyPilot SDK -----------------------------------------------------------


class FakeSdk:
    """The part of SkyPilot's client SDK SkyClient uses: each call returns a request id; `get` its result."""

    class StatusRefreshMode:
        AUTO = "auto"

    class ClusterStatus:
        def __init__(self, value: str) -> None:
            self.value = value

    class Task:
        @staticmethod
        def from_yaml_config(config: dict[str, Any]) -> dict[str, Any]:
            return {"task": config}

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, dict[str, Any]]] = []
        self.results: dict[str, Any] = {}

    def _request(self, name: str, arg: Any, kwargs: dict[str, Any], result: Any) -> str:
        self.calls.append((name, arg, kwargs))
        request_id = f"req-{len(self.calls)}"
        self.results[request_id] = result
        return request_id

    def launch(self, task: Any, **kwargs: Any) -> str:
        handle = type("Handle", (), {"head_ip": "34.1.2.3"})()
        return self._request("launch", task, kwargs, (1, handle))

    def down(self, cluster: str) -> str:
        return self._request("down", cluster, {}, None)

    def status(self, **kwargs: Any) -> str:
        records = [{"name": "zl-gpu--n1", "status": self.ClusterStatus("UP")}, {"name": "x", "status": "INIT"}]
        return self._request("status", None, kwargs, records)

    def enabled_clouds(self) -> str:
        return self._request("enabled_clouds", None, {}, ["AWS"])

    def get(self, request_id: str) -> Any:
        result = self.results.pop(request_id)  # a request's result is read once
        if isinstance(result, Exception):
            raise result
        return result


def test_sky_client_speaks_skypilots_request_and_get_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    sdk = FakeSdk()
    client_package = type(sys)("sky.client")
    client_package.sdk = sdk  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sky", sdk)
    monkeypatch.setitem(sys.modules, "sky.client", client_package)
    monkeypatch.setitem(sys.modules, "sky.client.sdk", sdk)
    client = SkyClient()
    config = {"run": "zeroloop worker", "envs": {}}
    assert client.launch(config, "zl-gpu--n1", autostop_minutes=15, retry_until_up=False) == "34.1.2.3"
    assert sdk.calls[-1] == (
        "launch",
        {"task": config},
        {"cluster_name": "zl-gpu--n1", "retry_until_up": False, "idle_minutes_to_autostop": 15, "down": True},
    )
    client.launch(config, "zl-gpu--n2", autostop_minutes=None, retry_until_up=True)
    assert sdk.calls[-1][2]["down"] is False  # no autostop: no autodown either
    assert client.clusters() == [("zl-gpu--n1", "UP"), ("x", "INIT")]
    assert sdk.calls[-1][2] == {"refresh": "auto"}  # spot and autostopped clusters are checked with the cloud
    client.down("zl-gpu--n1")
    assert sdk.calls[-1][:2] == ("down", "zl-gpu--n1")
    assert client.enabled_clouds() == ["AWS"]
    assert sdk.results == {}  # every request was waited for


# --- live ----------------------------------------------------------------------------------------


def _live_skip_reason() -> str | None:
    if os.environ.get("ZEROLOOP_TEST_SKYPILOT") != "1":
        return "set ZEROLOOP_TEST_SKYPILOT=1 to launch real (billed) SkyPilot clusters"
    try:
        clouds = SkyClient().enabled_clouds()
    except ProviderError as exc:
        return str(exc)
    except Exception as exc:
        return f"`sky check` failed: {type(exc).__name__}: {exc}"
    if not clouds:
        return "`sky check` finds no cloud with credentials"
    return None


class TestSkyPilotLive(ProviderContract):
    """The contract against a real cloud: two small CPU clusters running `sleep`, torn down afterwards."""

    settle_s = 900.0

    @pytest.fixture
    def provider(self) -> SkyPilotProvider:
        reason = _live_skip_reason()
        if reason is not None:
            pytest.skip(reason)
        options: dict[str, Any] = {"autostop_minutes": 10}
        if os.environ.get("ZEROLOOP_TEST_SKYPILOT_CLOUD"):
            options["cloud"] = os.environ["ZEROLOOP_TEST_SKYPILOT_CLOUD"]
        return SkyPilotProvider("zltest", pool(cpus=2, options=options))

    def argv(self) -> tuple[str, ...]:
        return ("sleep", "3600")
