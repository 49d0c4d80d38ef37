"""The artifact store on both state-store backends and on local, in-memory and S3 (moto on loopback) locations."""

from __future__ import annotations

import hashlib
import threading
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.s3 import Location
from zeroloop.artifacts.cache import LocalCache
from zeroloop.artifacts.repository import Artifacts
from zeroloop.artifacts.transfer import ArtifactKind, Priority, TransferGate, open_location
from zeroloop.errors import ArtifactError
from zeroloop.events.bus import EventBus
from zeroloop.store.database import Store
from zeroloop.store.queries import artifacts as queries
from zeroloop.store.schema import events


@pytest.fixture(params=["file", "memory", "s3"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Location:
    if request.param == "file":
        return Location((tmp_path / "shared").as_uri())
    if request.param == "memory":
        return Location(f"memory://zeroloop-test-{uuid.uuid4().hex}")
    found: Location = request.getfixturevalue("s3_location")
    return found


def _artifacts(store: Store, location: Location, cache: Path, node: str = "n1", max_bytes: int = 10**9) -> Artifacts:
    bus = EventBus(store, node=node, source="test")
    return Artifacts(
        store,
        bus,
        url=location.url,
        cache_dir=cache,
        cache_max_bytes=max_bytes,
        node=node,
        storage_options=location.storage_options,
    )


def _file(tmp_path: Path, content: bytes, name: str = "batch.npz") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_put_then_fetch_elsewhere_returns_identical_verified_bytes(
    store: Store, location: Location, tmp_path: Path
) -> None:
    producer = _artifacts(store, location, tmp_path / "cache-a", node="a")
    consumer = _artifacts(store, location, tmp_path / "cache-b", node="b")
    content = b"game data" * 1000
    artifact = producer.put(_file(tmp_path, content), ArtifactKind.GAME_BATCH, config_key="tic_tac_toe_2p")
    assert artifact.sha256 == hashlib.sha256(content).hexdigest()
    assert artifact.size_bytes == len(content)
    fetched = consumer.fetch(artifact.sha256)
    assert fetched.read_bytes() == content
    assert fetched.is_relative_to(tmp_path / "cache-b")


def test_putting_the_same_content_twice_records_one_artifact_and_one_copy(
    store: Store, location: Location, tmp_path: Path
) -> None:
    artifacts = _artifacts(store, location, tmp_path / "cache")
    first = artifacts.put(_file(tmp_path, b"x" * 10, "one"), ArtifactKind.MODEL)
    second = artifacts.put(_file(tmp_path, b"x" * 10, "two"), ArtifactKind.MODEL)
    assert first == second
    with store.read() as conn:
        assert len(queries.list_artifacts(conn)) == 1
        assert len(queries.copies_of(conn, first.sha256)) == 1


def test_corrupt_copy_is_quarantined_announced_and_refused(store: Store, location: Location, tmp_path: Path) -> None:
    producer = _artifacts(store, location, tmp_path / "cache-a")
    artifact = producer.put(_file(tmp_path, b"precious model bytes"), ArtifactKind.MODEL)
    fs, path = open_location(producer.location(ArtifactKind.MODEL, artifact.sha256), location.storage_options)
    fs.pipe_file(path, b"precious model bytez")
    consumer = _artifacts(store, location, tmp_path / "cache-b", node="b")
    with pytest.raises(ArtifactError, match="no intact copy"):
        consumer.fetch(artifact.sha256)
    with store.read() as conn:
        assert queries.copies_of(conn, artifact.sha256) == []
        assert [row["status"] for row in queries.copies_of(conn, artifact.sha256, status=None)] == ["quarantined"]
        corrupt = conn.execute(sa.select(events.c.payload).where(events.c.type == "ARTIFACT_CORRUPT")).scalar_one()
    assert corrupt["artifact_sha256"] == artifact.sha256
    assert not fs.exists(path)


def test_corrupt_cache_entry_is_replaced_from_the_shared_copy(store: Store, location: Location, tmp_path: Path) -> None:
    artifacts = _artifacts(store, location, tmp_path / "cache")
    artifact = artifacts.put(_file(tmp_path, b"abc" * 100), ArtifactKind.GAME_BATCH)
    artifacts.cache.path(artifact.sha256).write_bytes(b"rotten")
    assert artifacts.fetch(artifact.sha256).read_bytes() == b"abc" * 100


def test_verify_counts_intact_copies_and_quarantines_missing_ones(
    store: Store, location: Location, tmp_path: Path
) -> None:
    artifacts = _artifacts(store, location, tmp_path / "cache")
    artifact = artifacts.put(_file(tmp_path, b"data"), ArtifactKind.GAME_BATCH)
    assert artifacts.verify(artifact.sha256) == 1
    fs, path = open_location(artifacts.location(ArtifactKind.GAME_BATCH, artifact.sha256), location.storage_options)
    fs.rm_file(path)
    assert artifacts.verify(artifact.sha256) == 0


def test_unknown_artifact_and_bad_digests_are_refused(store: Store, location: Location, tmp_path: Path) -> None:
    artifacts = _artifacts(store, location, tmp_path / "cache")
    with pytest.raises(ArtifactError, match="not in the manifest"):
        artifacts.fetch("0" * 64)
    for bad in ("../../etc/passwd", "A" * 64, "0" * 63):
        with pytest.raises(ArtifactError, match="not a sha256"):
            artifacts.fetch(bad)


@pytest.mark.parametrize("url", ["http://example.com/x", "zip://a.zip", "bogus://x", "github://o/r"])
def test_unsuitable_or_unknown_schemes_are_refused(url: str) -> None:
    with pytest.raises(ArtifactError, match="scheme"):
        open_location(url)


def test_sole_copies_on_a_node_are_reported(store: Store, location: Location, tmp_path: Path) -> None:
    artifacts = _artifacts(store, location, tmp_path / "cache")
    shared = artifacts.put(_file(tmp_path, b"shared"), ArtifactKind.GAME_BATCH)
    with store.transaction() as conn:
        queries.record_copy(conn, sha256=shared.sha256, location="file:///n1/x", node="n1", now=1.0)
        queries.record_artifact(
            conn,
            {"sha256": "f" * 64, "kind": "game_batch", "size_bytes": 1, "meta": {}, "created_at": 1.0},
        )
        queries.record_copy(conn, sha256="f" * 64, location="file:///n1/y", node="n1", now=1.0)
    assert artifacts.sole_copies_on("n1") == ["f" * 64]
    assert artifacts.sole_copies_on("n2") == []


def test_cache_evicts_least_recently_used_within_its_limit(tmp_path: Path) -> None:
    import os

    cache = LocalCache(tmp_path, max_bytes=25)
    digests = [hashlib.sha256(bytes([i])).hexdigest() for i in range(3)]
    for age, sha in enumerate(digests):
        path = cache.path(sha)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 10)
        os.utime(path, (1000 + age, 1000 + age))
    assert cache.evict(keep=digests[0]) == [digests[1]]
    assert cache.size_bytes() == 20


def test_gate_serves_the_higher_priority_waiter_first() -> None:
    gate = TransferGate(bytes_per_s=20_000)
    gate.acquire(20_000, Priority.BULK)  # drain the bucket so the next two must wait
    order: list[str] = []
    started = threading.Barrier(3)

    def transfer(name: str, priority: Priority) -> None:
        started.wait(timeout=10)
        gate.acquire(10_000, priority)
        order.append(name)

    threads = [
        threading.Thread(target=transfer, args=("games", Priority.BULK)),
        threading.Thread(target=transfer, args=("model", Priority.CRITICAL)),
    ]
    for thread in threads:
        thread.start()
    started.wait(timeout=10)
    for thread in threads:
        thread.join(timeout=10)
    assert order == ["model", "games"]
