"""Schema migrations: where a database stands against this code, and the upgrade.

Alembic holds the revisions (`migrations/versions`); zeroloop always hands it an open
connection inside one transaction, so an upgrade either completes or leaves the
database as it was. Concurrent upgraders queue: SQLite's write lock, PostgreSQL's
advisory lock. A database whose revision this code does not know is newer than the
code and is left untouched.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from zeroloop.errors import SchemaError
from zeroloop.store.database import Store

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
_UPGRADE_LOCK = 7_300_113  # arbitrary PostgreSQL advisory-lock key, owned by schema upgrades


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database's schema stands: `current` is None for an empty database."""

    current: str | None
    head: str

    @property
    def up_to_date(self) -> bool:
        """Whether the database is at the revision this code expects."""
        return self.current == self.head


def _config(conn: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


@functools.cache
def revisions() -> dict[str, str | None]:
    """Every revision this code knows, with the one it follows (None for the first), read from the files.

    Read without importing alembic, so that a command that only checks the schema (every
    command opening the App) does not pay for it; tests/store check this against alembic's view.
    """
    found: dict[str, str | None] = {}
    for path in sorted((MIGRATIONS / "versions").glob("[0-9]*.py")):
        values: dict[str, object] = {}
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Constant):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
                        values[target.id] = node.value.value
        parent = values.get("down_revision")
        found[str(values["revision"])] = None if parent is None else str(parent)
    return found


def head_revision() -> str:
    """The newest revision this code knows: the one no other revision follows."""
    known = revisions()
    heads = set(known) - {parent for parent in known.values() if parent is not None}
    assert len(heads) == 1, f"the migrations must form one line, found heads {sorted(heads)}"
    return heads.pop()


def _current(conn: Connection) -> str | None:
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def is_known(revision: str) -> bool:
    """Whether this code knows schema revision `revision` (one it can upgrade from, or its head)."""
    return revision in revisions()


def status(store: Store) -> SchemaStatus:
    """Read the schema revision; raise SchemaError if the database is newer than this code."""
    with store.read() as conn:
        current = _current(conn)
    head = head_revision()
    if current is not None and not is_known(current):
        raise SchemaError(
            f"the store at {store.display_url} has schema revision {current}, newer than this zeroloop "
            f"(which knows up to {head}): upgrade zeroloop on this machine"
        )
    return SchemaStatus(current=current, head=head)


def upgrade(store: Store) -> SchemaStatus:
    """Bring the schema to the head revision in one transaction; return the status before."""
    with store.transaction() as conn:
        if store.backend == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _UPGRADE_LOCK})
        before = _current(conn)
        if before is not None and not is_known(before):
            raise SchemaError(
                f"the store at {store.display_url} has schema revision {before}, newer than this zeroloop: "
                "upgrade zeroloop instead of the database"
            )
        if before != head_revision():
            from alembic import command

            command.upgrade(_config(conn), "head")
    return SchemaStatus(current=before, head=head_revision())


def require_current(store: Store) -> None:
    """Raise SchemaError unless the schema is exactly at head."""
    state = status(store)
    if state.current is None:
        raise SchemaError(f"the store at {store.display_url} has no zeroloop schema: run `zeroloop db upgrade`")
    if not state.up_to_date:
        raise SchemaError(
            f"the store at {store.display_url} is at schema revision {state.current}, this zeroloop needs "
            f"{state.head}: run `zeroloop db upgrade`"
        )
