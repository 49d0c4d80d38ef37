"""The test Slurm harness's own guards: a daemon that dies is reported, and CI may not skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fleet.providers import slurm_cluster
from tests.fleet.providers.slurm_cluster import SlurmCluster, SlurmUnavailable


def _fake(path: Path, body: str) -> str:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_a_daemon_that_dies_at_start_is_reported_with_its_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    munged = _fake(
        tmp_path / "munged",
        'for a in "$@"; do case "$a" in --socket=*) touch "${a#--socket=}";; esac; done; exec sleep 30',
    )
    slurmctld = _fake(tmp_path / "slurmctld", "echo 'fatal: no way'; exit 3")
    slurmd = _fake(
        tmp_path / "slurmd",
        'if [ "$1" = -C ]; then echo "NodeName=x CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 '
        'ThreadsPerCore=1 RealMemory=1000"; exit 0; fi; exec sleep 30',
    )
    monkeypatch.setattr(slurm_cluster, "DAEMONS", (munged, slurmctld, slurmd))
    root = tmp_path / "cluster"
    root.mkdir()
    cluster = SlurmCluster(root, "x")
    try:
        with pytest.raises(SlurmUnavailable, match=r"^slurmctld exited with status 3\n(.|\n)*fatal: no way"):
            cluster.start(timeout_s=10)
        assert "NodeName=x NodeAddr=127.0.0.1 NodeHostname=x CPUs=2" in cluster.conf.read_text()
    finally:
        cluster.stop()
    assert all(process.poll() is not None for process in cluster.processes.values())
    assert not root.exists()


def test_where_slurm_cannot_run_tests_skip_locally_and_fail_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slurm_cluster, "DAEMONS", ("/nowhere/munged",))
    assert slurm_cluster.why_unavailable() == (
        "Slurm is not installed (/nowhere/munged missing): apt-get install slurm-wlm munge"
    )
    monkeypatch.setattr(slurm_cluster, "DAEMONS", ())
    monkeypatch.setattr(slurm_cluster, "CLIENTS", ())
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "run the tests as root" in str(slurm_cluster.why_unavailable())
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="no slurm here"):
        slurm_cluster._unavailable("no slurm here")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"no slurm here \(the Slurm tests may not skip under CI=true\)"):
        slurm_cluster._unavailable("no slurm here")
