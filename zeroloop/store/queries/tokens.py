"""Operations on the API tokens of `zeroloop serve` (`tokens`) and the credentials issued under them: only hashes."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from zeroloop.store.schema import credentials, tokens


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


# --- credentials: short-lived, node-bound, issued under a worker token ------------------------


def insert_credential(conn: Connection, row: dict[str, Any]) -> None:
    """Add one credential row (its id and secret hash must be new)."""
    conn.execute(sa.insert(credentials).values(**row))


def get_credential(conn: Connection, credential_id: str) -> dict[str, Any] | None:
    """One credential by id, with its token's revocation time (`token_revoked_at`), or None."""
    query = (
        sa.select(credentials, tokens.c.revoked_at.label("token_revoked_at"))
        .join(tokens, tokens.c.id == credentials.c.token_id)
        .where(credentials.c.id == credential_id)
    )
    row = conn.execute(query).mappings().first()
    return dict(row) if row else None


def delete_expired_credentials(conn: Connection, node: str, before: float) -> int:
    """Delete `node`'s credentials that expired before `before` (epoch seconds); how many."""
    query = sa.delete(credentials).where(credentials.c.node == node, credentials.c.expires_at < before)
    return int(conn.execute(query).rowcount)


def expire_token(conn: Connection, token_id: str, at: float) -> bool:
    """Make an unrevoked token expire at `at` (or sooner, if it already would); False when there is none."""
    row = get_token(conn, token_id)
    if row is None or row["revoked_at"] is not None:
        return False
    when = at if row["expires_at"] is None else min(at, row["expires_at"])
    conn.execute(sa.update(tokens).where(tokens.c.id == token_id).values(expires_at=when))
    return True


def live_ids(conn: Connection, now: float) -> tuple[set[str], set[str]]:
    """The ids of every token, and of the credentials not expired at `now`: (tokens, credentials)."""
    token_ids = conn.execute(sa.select(tokens.c.id)).scalars()
    credential_ids = conn.execute(sa.select(credentials.c.id).where(credentials.c.expires_at > now)).scalars()
    return {str(i) for i in token_ids}, {str(i) for i in credential_ids}
