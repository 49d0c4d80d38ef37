"""credentials and node quarantines: short-lived node-bound credentials; results kept out of training

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

`credentials`: what a worker token is exchanged for at `zeroloop serve`: a secret bound to
the token's node that lives `server.credential_s` and is refreshed as the worker
heartbeats; only its sha256 is stored, and it dies with its token (revoked, or deleted).

`node_quarantines`: an admin's decision, with its reason and who took it, to keep a
node's results out of every training window until it is lifted.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "credentials",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("token_id", sa.String(length=40), nullable=False),
        sa.Column("node", sa.String(length=200), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("issued_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["token_id"], ["tokens.id"], name=op.f("fk_credentials_token_id_tokens"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credentials")),
        sa.UniqueConstraint("secret_sha256", name=op.f("uq_credentials_secret_sha256")),
    )
    op.create_index(op.f("ix_credentials_node_expires_at"), "credentials", ["node", "expires_at"], unique=False)
    op.create_table(
        "node_quarantines",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("node", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.String(length=400), nullable=False),
        sa.Column("actor", sa.String(length=80), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("lifted_at", sa.Float(), nullable=True),
        sa.Column("lifted_by", sa.String(length=80), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_node_quarantines")),
    )
    op.create_index(op.f("ix_node_quarantines_node_lifted_at"), "node_quarantines", ["node", "lifted_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_node_quarantines_node_lifted_at"), table_name="node_quarantines")
    op.drop_table("node_quarantines")
    op.drop_index(op.f("ix_credentials_node_expires_at"), table_name="credentials")
    op.drop_table("credentials")
