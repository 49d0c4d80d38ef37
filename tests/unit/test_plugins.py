"""Providers and workloads of one's own: named by `module:Class` or an entry point, checked at start in one line."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zeroloop.app import App
from zeroloop.config import PoolSettings, Settings, WorkloadSettings
from zeroloop.errors import ConfigError
from zeroloop.fleet.pools import provider_class
from zeroloop.fleet.providers.base import Launched, LaunchSpec, Machine, Provider
from zeroloop.fleet.providers.local import LocalProvider
from zeroloop.workload.factory import check_workload, make_workload
from zeroloop.workload.protocol import Evidence


class HalfProvider(Provider):
    """Forgets `machines`."""

    kind = "half"

    def launch(self, spec: LaunchSpec) -> Launched:
        raise NotImplementedError

    def terminate(self, provider_id: str) -> None:
        raise NotImplementedError


class WholeProvider(HalfProvider):
    kind = "whole"

    def machines(self) -> list[Machine]:
        return []


class NotAProvider:
    pass


class EchoWorkload:
    """The smallest workload class of one's own: built from the settings, each operation a stub."""

    def __init__(self, settings: WorkloadSettings) -> None:
        self.settings = settings

    @classmethod
    def from_settings(cls, settings: WorkloadSettings) -> EchoWorkload:
        return cls(settings)

    def selfplay(self, request: Any) -> Evidence:
        raise NotImplementedError

    def export(self, request: Any) -> Evidence:
        raise NotImplementedError

    def train(self, request: Any, progress: Any = None) -> Evidence:
        raise NotImplementedError

    def evaluate(self, request: Any) -> Evidence:
        raise NotImplementedError


class NoTrainWorkload:
    @classmethod
    def from_settings(cls, settings: WorkloadSettings) -> NoTrainWorkload:
        return cls()

    def selfplay(self, request: Any) -> Evidence:
        raise NotImplementedError


HERE = __name__


@pytest.fixture
def entry_point(tmp_path: Path) -> Iterator[None]:
    """An installed distribution declaring provider `mycloud` and workload `echo` as entry points, on sys.path."""
    info = tmp_path / "zeroloop_probe_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zeroloop-probe-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[zeroloop.providers]\nmycloud = {HERE}:WholeProvider\n\n[zeroloop.workloads]\necho = {HERE}:EchoWorkload\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        yield
    finally:
        sys.path.remove(str(tmp_path))


def test_a_built_in_kind_a_module_class_and_an_entry_point_all_resolve(entry_point: None) -> None:
    assert provider_class("p", "local") is LocalProvider
    assert provider_class("p", f"{HERE}:WholeProvider") is WholeProvider
    assert provider_class("p", "mycloud") is WholeProvider


def test_a_pool_of_ones_own_provider_opens_with_the_app(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, providers={"own": PoolSettings(kind=f"{HERE}:WholeProvider")})
    with App(settings) as app:
        assert isinstance(app.fleet.provider("own"), WholeProvider)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("nimbus", "unknown provider kind 'nimbus'; known kinds: command, local, skypilot, slurm"),
        ("no_such_module_zl:Thing", "cannot import no_such_module_zl: ModuleNotFoundError"),
        (f"{HERE}:Missing", f"module {HERE} has no Missing"),
        (f"{HERE}:NotAProvider", "is not a subclass of zeroloop.fleet.providers.base.Provider"),
        (f"{HERE}:HalfProvider", "does not implement machines"),
    ],
)
def test_a_provider_that_does_not_load_or_fit_stops_the_start_in_one_line(
    tmp_path: Path, kind: str, message: str
) -> None:
    settings = Settings(data_dir=tmp_path, providers={"gpu": PoolSettings(kind=kind)})
    with pytest.raises(ConfigError) as caught:
        App(settings)
    text = str(caught.value)
    assert text.startswith("invalid setting providers.gpu.kind: ") and message in text
    assert "\n" not in text


@pytest.mark.parametrize("kind", ["../evil pool", "a b", "x:", ":Y", "pkg.mod:Class:extra"])
def test_a_kind_that_cannot_name_a_class_is_refused_with_the_settings(kind: str) -> None:
    with pytest.raises(ConfigError, match="neither a kind's name nor"):
        PoolSettings(kind=kind)
    with pytest.raises(ConfigError, match="neither a kind's name nor"):
        WorkloadSettings(kind=kind)


def test_a_workload_of_ones_own_is_built_from_the_settings(entry_point: None) -> None:
    for kind in (f"{HERE}:EchoWorkload", "echo"):
        settings = WorkloadSettings(kind=kind, simulations=7)
        check_workload(settings)
        workload = make_workload(settings)
        assert isinstance(workload, EchoWorkload) and workload.settings.simulations == 7


def test_a_workload_class_that_lacks_operations_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match=r"invalid setting workload.kind: .*NoTrainWorkload lacks export, train"):
        check_workload(WorkloadSettings(kind=f"{HERE}:NoTrainWorkload"))
    with pytest.raises(ConfigError, match="unknown workload kind 'nope'"):
        check_workload(WorkloadSettings(kind="nope"))
