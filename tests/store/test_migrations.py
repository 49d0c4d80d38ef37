"""Schema migrations on both backends: upgrade, idempotence, drift, and a newer database."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from zeroloop.errors import SchemaError
from zeroloop.store import migrate
from zeroloop.store.database import Store
from zeroloop.store.schema import metadata


def test_upgrade_from_empty_reaches_head_and_is_idempotent(empty_store_url: str) -> None:
    with Store(empty_store_url) as store:
        assert migrate.status(store).current is None
        with pytest.raises(SchemaError, match="zeroloop db upgrade"):
            migrate.require_current(store)
        before = migrate.upgrade(store)
        assert before.current is None
        assert migrate.status(store).up_to_date
        again = migrate.upgrade(store)
        assert again.up_to_date
        migrate.require_current(store)


def test_the_revisions_read_from_the_files_are_alembics() -> None:
    """migrate reads the revision graph without alembic (for a quick start); alembic must see the same."""
    config = Config()
    config.set_main_option("script_location", str(migrate.MIGRATIONS))
    scripts = ScriptDirectory.from_config(config)
    assert migrate.revisions() == {script.revision: script.down_revision for script in scripts.walk_revisions()}
    assert migrate.head_revision() == scripts.get_current_head()


def test_migrated_database_matches_the_schema_module(empty_store_url: str) -> None:
    with Store(empty_store_url) as store:
        migrate.upgrade(store)
        with store.read() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_newer_schema_is_refused_and_left_untouched(empty_store_url: str) -> None:
    with Store(empty_store_url) as store:
        migrate.upgrade(store)
        with store.transaction() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = 'f00dcafe'"))
        with pytest.raises(SchemaError, match="newer than this zeroloop"):
            migrate.status(store)
        with pytest.raises(SchemaError, match="newer than this zeroloop"):
            migrate.upgrade(store)
        with store.read() as conn:
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == "f00dcafe"
