"""The named catalogue of store operations, one module per family of tables.

Every persistent operation of zeroloop is one function here, taking an open SQLAlchemy
`Connection` first; managers call these and nothing else touches tables. The contract
suite in tests/store runs each of them on SQLite and on PostgreSQL.
"""

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection


def dialect_insert(conn: Connection, table: sa.Table) -> Any:
    """An INSERT for `table` in the connection's dialect, which offers `on_conflict_do_nothing/update`."""
    return postgresql.insert(table) if conn.dialect.name == "postgresql" else sqlite.insert(table)
