"""The manifest names shared copies relative to the artifact location: a moved data directory still resolves."""

from __future__ import annotations

import shutil
from pathlib import Path

import sqlalchemy as sa
from alembic import command

from zeroloop.app import App
from zeroloop.artifacts.transfer import ArtifactKind
from zeroloop.config import Settings
from zeroloop.store import migrate
from zeroloop.store.database import Store
from zeroloop.store.queries import artifacts as queries


def test_a_copied_data_directory_resolves_its_artifacts_without_the_original(
    settings: Settings, tmp_path: Path
) -> None:
    original = tmp_path / "data"
    source = tmp_path / "model.pt"
    source.write_bytes(b"weights" * 500)
    with App(settings) as app:
        artifact = app.artifacts.put(source, ArtifactKind.MODEL, config_key="tic_tac_toe_2p")
        with app.store.read() as conn:
            (copy,) = queries.copies_of(conn, artifact.sha256)
    assert copy["location"] == f"model/{artifact.sha256[:2]}/{artifact.sha256}"
    moved = tmp_path / "elsewhere"
    shutil.copytree(original, moved)
    shutil.rmtree(original)
    shutil.rmtree(moved / "cache")  # the fetch must come from the moved artifact location itself
    with App(Settings(data_dir=moved)) as app:
        assert app.artifacts.verify(artifact.sha256) == 1
        fetched = app.artifacts.fetch(artifact.sha256)
        assert fetched.read_bytes() == source.read_bytes()
        assert fetched.is_relative_to(moved)
        assert app.artifacts.location(ArtifactKind.MODEL, artifact.sha256).startswith(moved.as_uri())
    assert not original.exists()


def test_held_copies_keep_their_absolute_url_and_evacuate_to_a_relative_key(tmp_path: Path) -> None:
    blocked = tmp_path / "shared"
    blocked.write_text("not a directory: uploads fail")
    settings = Settings(data_dir=tmp_path / "data", artifacts={"url": blocked.as_uri()}, cluster={"node_id": "w1"})
    source = tmp_path / "batch.npz"
    source.write_bytes(b"games" * 100)
    with App(settings) as app:
        artifact = app.artifacts.put(source, ArtifactKind.GAME_BATCH)
        with app.store.read() as conn:
            (held,) = queries.copies_of(conn, artifact.sha256)
        assert (held["node"], held["location"]) == ("w1", (tmp_path / "data/held/w1" / artifact.sha256).as_uri())
        blocked.unlink()  # the shared location is back
        assert app.artifacts.evacuate() == 1
        with app.store.read() as conn:
            (shared,) = queries.copies_of(conn, artifact.sha256)
    assert (shared["node"], shared["location"]) == (None, f"game_batch/{artifact.sha256[:2]}/{artifact.sha256}")


def test_migration_rewrites_absolute_shared_copies_to_relative_keys(empty_store_url: str) -> None:
    sha = "ab" * 32
    other = "cd" * 32
    with Store(empty_store_url) as store:
        with store.transaction() as conn:
            command.upgrade(migrate._config(conn), "0004")
            for digest, kind in ((sha, "model"), (other, "game_batch")):
                conn.execute(
                    sa.text(
                        "INSERT INTO artifacts (sha256, kind, size_bytes, meta, created_at) "
                        "VALUES (:sha, :kind, 1, '{}', 0)"
                    ),
                    {"sha": digest, "kind": kind},
                )
            copies = [
                (sha, f"file:///old/place/model/ab/{sha}", None),
                (sha, f"s3://bucket/prefix/model/ab/{sha}", None),  # the same copy under an older name: folded
                (other, f"file:///data/held/n1/{other}", "n1"),  # held on a node: stays absolute
                (other, "file:///somewhere/unrelated", None),  # not a key of its own: left alone
            ]
            for digest, location, node in copies:
                conn.execute(
                    sa.text(
                        "INSERT INTO artifact_copies (sha256, location, node, status, created_at) "
                        "VALUES (:sha, :location, :node, 'present', 0)"
                    ),
                    {"sha": digest, "location": location, "node": node},
                )
        migrate.upgrade(store)
        with store.read() as conn:
            found = sorted(conn.execute(sa.text("SELECT sha256, location FROM artifact_copies")).all())
    assert found == sorted(
        [
            (sha, f"model/ab/{sha}"),
            (other, f"file:///data/held/n1/{other}"),
            (other, "file:///somewhere/unrelated"),
        ]
    )
