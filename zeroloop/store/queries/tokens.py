"""Operations on the API tokens of `zeroloop serve` (`tokens`): only the sha256 of a secret is stored."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from zeroloop.store.schema import tokens


def insert_token(conn: Connection, row: dict[str, Any]) -> None:
    """Add one token row (its id and secret hash must be new)."""
    conn.execute(sa.insert(tokens).values(**row))


def get_token(conn: Connection, token_id: str) -> dict[str, Any] | None:
    """One token's row by its public id, or None."""
    row = conn.execute(sa.select(tokens).where(tokens.c.id == token_id)).mappings().first()
    return dict(row) if row else None


def list_tokens(conn: Connection) -> list[dict[str, Any]]:
    """Every token row, oldest first."""
    return [dict(row) for row in conn.execute(sa.select(tokens).order_by(tokens.c.created_at, tokens.c.id)).mappings()]


def count_usable(conn: Connection, now: float) -> int:
    """How many tokens are neither revoked nor expired at `now` (epoch seconds)."""
    query = (
        sa.select(sa.func.count())
        .select_from(tokens)
        .where(tokens.c.revoked_at.is_(None), sa.or_(tokens.c.expires_at.is_(None), tokens.c.expires_at > now))
    )
    return int(conn.execute(query).scalar_one())


def revoke_token(conn: Connection, token_id: str, now: float) -> bool:
    """Mark a token revoked at `now`; False when there is no such token or it was already revoked."""
    result = conn.execute(
        sa.update(tokens).where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None)).values(revoked_at=now)
    )
    return bool(result.rowcount)


def revoke_node_tokens(conn: Connection, node: str, now: float) -> int:
    """Revoke every live token of `node` at `now` (a fleet machine that is gone); how many."""
    result = conn.execute(
        sa.update(tokens).where(tokens.c.node == node, tokens.c.revoked_at.is_(None)).values(revoked_at=now)
    )
    return int(result.rowcount)


def touch_token(conn: Connection, token_id: str, now: float) -> None:
    """Record that a token was used at `now` (epoch seconds)."""
    conn.execute(sa.update(tokens).where(tokens.c.id == token_id).values(last_used_at=now))
