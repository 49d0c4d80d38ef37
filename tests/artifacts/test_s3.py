"""S3 specifics against a real S3 API on loopback (moto): multipart uploads, settings, doctor's bucket check."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.s3 import S3_MIN_PART_BYTES, Location
from zeroloop.artifacts.repository import Artifacts
from zeroloop.artifacts.transfer import ArtifactKind, open_location
from zeroloop.cli import doctor
from zeroloop.config import ArtifactSettings, PoolSettings, Settings, load_settings
from zeroloop.events.bus import EventBus
from zeroloop.fleet.manager import direct_worker_env
from zeroloop.store.database import Store


def _artifacts(store: Store, where: Location, cache: Path) -> Artifacts:
    bus = EventBus(store, node="n1", source="test")
    return Artifacts(
        store,
        bus,
        url=where.url,
        cache_dir=cache,
        cache_max_bytes=10**9,
        node="n1",
        storage_options=where.storage_options,
    )


def test_a_file_above_the_block_size_goes_up_in_parts_of_the_block_size(
    store: Store, s3_location: Location, tmp_path: Path
) -> None:
    artifacts = _artifacts(store, s3_location, tmp_path / "cache")
    parts: list[int] = []

    def on_upload_part(params: dict[str, Any], **_: Any) -> None:
        parts.append(params["body"].getbuffer().nbytes)

    client = artifacts.fs.connect()  # s3fs: the botocore client, whose event hooks observe every request
    client.meta.events.register("before-call.s3.UploadPart", on_upload_part)
    content = os.urandom(2 * S3_MIN_PART_BYTES + 12345)
    source = tmp_path / "big.npz"
    source.write_bytes(content)
    artifact = artifacts.put(source, ArtifactKind.GAME_BATCH)
    assert parts == [S3_MIN_PART_BYTES, S3_MIN_PART_BYTES, 12345]
    assert artifact.sha256 == hashlib.sha256(content).hexdigest()
    artifacts.cache.remove(artifact.sha256)
    assert artifacts.fetch(artifact.sha256).read_bytes() == content
    fs, path = open_location(artifacts.location(ArtifactKind.GAME_BATCH, artifact.sha256), s3_location.storage_options)
    assert fs.size(path) == len(content)
    assert [name for name in fs.find(artifacts.root) if name.endswith(".part")] == []  # no temporary left behind


def test_storage_options_reach_the_artifacts_of_an_app_and_launched_workers(
    settings: Settings, s3_location: Location
) -> None:
    configured = Settings(
        data_dir=settings.data_dir,
        artifacts=ArtifactSettings(url=s3_location.url, storage_options=s3_location.storage_options),
    )
    env = direct_worker_env(configured)("w1", "pool", PoolSettings(kind="local"))
    assert json.loads(env["ZEROLOOP_ARTIFACTS__STORAGE_OPTIONS"]) == s3_location.storage_options
    assert "ZEROLOOP_ARTIFACTS__STORAGE_OPTIONS" not in direct_worker_env(settings)(
        "w1", "pool", PoolSettings(kind="local")
    )


def test_storage_options_come_from_the_environment(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZEROLOOP_ARTIFACTS__STORAGE_OPTIONS", '{"endpoint_url": "http://127.0.0.1:9000"}')
    monkeypatch.setenv("ZEROLOOP_ARTIFACTS__STORAGE_OPTIONS__SECRET", "s3cr3t")
    loaded = load_settings()
    assert loaded.artifacts.storage_options == {"endpoint_url": "http://127.0.0.1:9000", "secret": "s3cr3t"}


def test_secrets_in_storage_options_are_never_shown(settings: Settings) -> None:
    options = {
        "endpoint_url": "http://user:pw@minio:9000",
        "key": "AKIA-ID",
        "secret": "s3cr3t",
        "default_block_size": 8 * 1024 * 1024,
        "client_kwargs": {"aws_session_token": "tok", "region_name": "eu-west-1"},
    }
    shown = Settings(data_dir=settings.data_dir, artifacts=ArtifactSettings(storage_options=options)).redacted()
    assert shown["artifacts"]["storage_options"] == {
        "endpoint_url": "http://user:***@minio:9000",
        "key": "***",
        "secret": "***",
        "default_block_size": 8 * 1024 * 1024,
        "client_kwargs": {"aws_session_token": "***", "region_name": "eu-west-1"},
    }


def _doctor(settings: Settings, url: str, options: dict[str, Any]) -> doctor.Check:
    configured = Settings(data_dir=settings.data_dir, artifacts=ArtifactSettings(url=url, storage_options=options))
    (finding,) = doctor.run_checks(configured, (doctor.check_artifacts,))
    return finding


def test_doctor_writes_reads_and_deletes_a_test_object_in_the_bucket(settings: Settings, s3_location: Location) -> None:
    finding = _doctor(settings, s3_location.url, s3_location.storage_options)
    assert finding.verdict == doctor.Verdict.OK, finding
    assert "write, read back, delete ok" in finding.detail
    fs, root = open_location(s3_location.url, s3_location.storage_options)
    fs.invalidate_cache()
    assert fs.find(root.split("/")[0]) == []  # the test object is gone


def test_doctor_names_a_missing_bucket_and_how_to_create_it(settings: Settings, s3_location: Location) -> None:
    finding = _doctor(settings, "s3://zeroloop-no-such-bucket/artifacts", s3_location.storage_options)
    assert finding.verdict == doctor.Verdict.FAIL
    assert "bucket zeroloop-no-such-bucket does not exist" in finding.detail
    assert finding.fix.startswith("aws s3 mb s3://zeroloop-no-such-bucket")


def test_doctor_names_an_unreachable_endpoint_without_its_secret(settings: Settings, s3_location: Location) -> None:
    options = {
        **s3_location.storage_options,
        "endpoint_url": "http://127.0.0.1:1",
        "config_kwargs": {"retries": {"max_attempts": 1}},
    }
    finding = _doctor(settings, s3_location.url, options)
    assert finding.verdict == doctor.Verdict.FAIL
    assert "cannot reach bucket" in finding.detail and "127.0.0.1:1" in finding.detail
    assert "zeroloop-test-secret" not in finding.detail + finding.fix


def test_doctor_names_a_read_only_bucket(
    settings: Settings, s3_location: Location, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs, _root = open_location(s3_location.url, s3_location.storage_options)

    def refuse(*_: Any, **__: Any) -> None:
        raise PermissionError("Access Denied")

    monkeypatch.setattr(fs, "pipe_file", refuse)
    finding = _doctor(settings, s3_location.url, s3_location.storage_options)
    assert finding.verdict == doctor.Verdict.FAIL
    assert "cannot write a test object: Access Denied" in finding.detail


def test_a_missing_backend_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import fsspec

    def missing(*_: Any, **__: Any) -> None:
        raise ImportError("Install s3fs to access S3")

    monkeypatch.setattr(fsspec.core, "url_to_fs", missing)
    from zeroloop.errors import ArtifactError

    with pytest.raises(ArtifactError, match=r"pip install 'zeroloop\[s3\]'"):
        open_location("s3://bucket/x")
