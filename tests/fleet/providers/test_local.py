"""The local provider keeps the provider contract, and finds workers an earlier process started."""

from __future__ import annotations

import sys
from pathlib import Path

import psutil
import pytest

from tests.fleet.providers.contract import ProviderContract, wait_until
from zeroloop.config import PoolSettings
from zeroloop.fleet.providers.base import LaunchSpec
from zeroloop.fleet.providers.local import LocalProvider


class TestLocalContract(ProviderContract):
    settle_s = 10.0

    @pytest.fixture
    def provider(self, tmp_path: Path) -> LocalProvider:
        return LocalProvider("local", PoolSettings(kind="local", max_nodes=2), data_dir=tmp_path)


def test_a_new_provider_instance_sees_and_stops_workers_an_earlier_one_started(tmp_path: Path) -> None:
    pool = PoolSettings(kind="local", max_nodes=1, options={"kill_after_s": 0})
    first = LocalProvider("local", pool, data_dir=tmp_path)
    contract = TestLocalContract()
    launched = first.launch(contract.spec(first))
    later = LocalProvider("local", pool, data_dir=tmp_path)  # e.g. after the coordinator restarted
    assert wait_until(lambda: any(m.provider_id == launched.provider_id for m in later.machines()), 10)
    other_cluster = LocalProvider("local", pool, data_dir=tmp_path / "elsewhere")
    assert all(m.provider_id != launched.provider_id for m in other_cluster.machines())
    later.terminate(launched.provider_id)  # kill_after_s 0: SIGKILL at once
    assert wait_until(lambda: all(m.provider_id != launched.provider_id for m in later.machines()), 10)


def test_bad_options_are_one_clear_line(tmp_path: Path) -> None:
    from zeroloop.errors import ConfigError

    with pytest.raises(ConfigError, match=r"providers\.mine\.options\.kill_after_s"):
        LocalProvider("mine", PoolSettings(kind="local", options={"kill_after_s": -1}), data_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"providers\.mine\.options\.colour"):
        LocalProvider("mine", PoolSettings(kind="local", options={"colour": "red"}), data_dir=tmp_path)


def test_listing_reads_each_process_environment_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pool = PoolSettings(kind="local", max_nodes=1, options={"kill_after_s": 0})
    first = LocalProvider("local", pool, data_dir=tmp_path)
    launched = first.launch(TestLocalContract().spec(first))
    later = LocalProvider("local", pool, data_dir=tmp_path)
    read: list[list[int]] = []
    node_of = later._node_of

    def counting(pid: int) -> str | None:
        read[-1].append(pid)
        return node_of(pid)

    monkeypatch.setattr(later, "_node_of", counting)
    try:
        for _ in range(2):
            read.append([])
            assert wait_until(lambda: any(m.provider_id == launched.provider_id for m in later.machines()), 10)
        assert len(read[0]) > 1  # every process on the machine, the worker among them
        assert not set(read[0]) & set(read[1])  # the second listing read only processes new since
    finally:
        first.kill(launched.provider_id)


def test_a_workers_own_children_are_not_machines(tmp_path: Path) -> None:
    pool = PoolSettings(kind="local", max_nodes=1, options={"kill_after_s": 0})
    provider = LocalProvider("local", pool, data_dir=tmp_path)
    # A worker with a job child of its own, which inherits its environment (as multiprocessing's do).
    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
    argv = (sys.executable, "-c", code + "time.sleep(600)")
    base = TestLocalContract().spec(provider)
    spec = LaunchSpec(base.node_id, base.pool, base.profile, argv, base.env)
    launched = provider.launch(spec)
    try:
        worker = psutil.Process(int(launched.provider_id.split(":")[0]))
        assert wait_until(lambda: len(worker.children()) == 1, 10)
        later = LocalProvider("local", pool, data_dir=tmp_path)  # sees the processes for the first time
        assert [m.provider_id for m in later.machines()] == [launched.provider_id]
    finally:
        for process in worker.children():
            process.kill()
        provider.kill(launched.provider_id)
