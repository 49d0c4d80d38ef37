"""With `server.presigned_url_s` and an S3 artifact location, a worker's download goes from the object store
(a real S3 API on loopback, moto) to the worker directly: the server signs a URL and carries no bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import make_app
from tests.s3 import Location
from tests.server.conftest import running_server
from zeroloop.artifacts.cache import LocalCache
from zeroloop.artifacts.repository import Artifacts
from zeroloop.artifacts.transfer import ArtifactKind, open_location
from zeroloop.config import ArtifactSettings, ServerSettings, Settings
from zeroloop.control.tokens import Role, Tokens
from zeroloop.errors import ArtifactError
from zeroloop.remote.client import ServerClient
from zeroloop.remote.parts import RemoteArtifacts
from zeroloop.store.queries import artifacts as artifact_queries

pytestmark = pytest.mark.usefixtures("settings")


def _fetch_through_server(
    store_url: str, tmp_path: Path, artifacts: ArtifactSettings, presigned_url_s: float, monkeypatch: pytest.MonkeyPatch
) -> tuple[bytes, bytes, list[str]]:
    """Put a model, fetch it as worker w1 through a server; (the bytes put, the bytes fetched, what the
    server fetched itself)."""
    content = b"weights " * 50_000
    served_by_server: list[str] = []
    original = Artifacts.fetch

    def counted(self: Artifacts, sha256: str) -> Path:
        served_by_server.append(sha256)
        return original(self, sha256)

    monkeypatch.setattr(Artifacts, "fetch", counted)
    server = ServerSettings(presigned_url_s=presigned_url_s)
    tmp_path.mkdir(parents=True, exist_ok=True)
    with make_app(store_url, tmp_path / "coordinator", artifacts=artifacts, server=server) as app:
        source = tmp_path / "model.pt"
        source.write_bytes(content)
        sha = app.artifacts.put(source, ArtifactKind.MODEL, config_key="c4_2p").sha256
        token, _ = Tokens(app.store).create(Role.WORKER, node="w1")
        with running_server(app) as url:
            client = ServerClient(ServerSettings(url=url, token=token), "w1")
            try:
                cache = LocalCache(tmp_path / "worker-cache", 10**9)
                fetched = RemoteArtifacts(client, cache).fetch(sha).read_bytes()
            finally:
                client.close()
    return content, fetched, served_by_server


def test_an_s3_artifact_reaches_the_worker_from_the_store_through_a_signed_url(
    store_url: str, tmp_path: Path, s3_location: Location, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = ArtifactSettings(url=s3_location.url, storage_options=s3_location.storage_options)
    content, fetched, served_by_server = _fetch_through_server(store_url, tmp_path, bucket, 60, monkeypatch)
    assert fetched == content and served_by_server == []


def test_without_the_setting_or_on_a_file_location_the_server_carries_the_bytes(
    store_url: str, tmp_path: Path, s3_location: Location, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = ArtifactSettings(url=s3_location.url, storage_options=s3_location.storage_options)
    content, fetched, served_by_server = _fetch_through_server(store_url, tmp_path / "off", bucket, 0, monkeypatch)
    assert fetched == content and len(served_by_server) == 1
    files = ArtifactSettings(url=f"file://{tmp_path / 'shared'}")
    content, fetched, served_by_server = _fetch_through_server(store_url, tmp_path / "file", files, 60, monkeypatch)
    assert fetched == content and len(served_by_server) == 1  # nothing to sign: streamed as before


def test_the_signing_lifetime_is_bounded(settings: Settings) -> None:
    with pytest.raises(Exception, match="presigned_url_s"):
        ServerSettings(presigned_url_s=-1)
    with pytest.raises(Exception, match="presigned_url_s"):
        ServerSettings(presigned_url_s=8 * 24 * 3600)


def test_a_corrupt_copy_in_the_store_is_streamed_by_the_server_instead_and_quarantined(
    store_url: str, tmp_path: Path, s3_location: Location
) -> None:
    bucket = ArtifactSettings(url=s3_location.url, storage_options=s3_location.storage_options)
    with make_app(store_url, tmp_path, artifacts=bucket, server=ServerSettings(presigned_url_s=60)) as app:
        source = tmp_path / "model.pt"
        source.write_bytes(b"good weights" * 1000)
        sha = app.artifacts.put(source, ArtifactKind.MODEL, config_key="c4_2p").sha256
        fs, path = open_location(app.artifacts.location(ArtifactKind.MODEL, sha), s3_location.storage_options)
        fs.pipe_file(path, b"rotten weights")  # the store's only copy no longer matches its name
        app.artifacts.cache.remove(sha)  # nor may the server's own cache answer for it
        token, _ = Tokens(app.store).create(Role.WORKER, node="w1")
        with running_server(app) as url:
            client = ServerClient(ServerSettings(url=url, token=token), "w1")
            try:
                with pytest.raises(ArtifactError, match="no intact copy"):
                    RemoteArtifacts(client, LocalCache(tmp_path / "worker-cache", 10**9)).fetch(sha)
            finally:
                client.close()
        with app.store.read() as conn:
            statuses = [copy["status"] for copy in artifact_queries.copies_of(conn, sha, status=None)]
        assert statuses == ["quarantined"]
