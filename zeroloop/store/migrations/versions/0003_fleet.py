"""fleet: nodes launched through provider pools, their lifecycle, slots and billed time

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

A node row now also stands for a launch request: the pool that launched it, the
provider's handle for the machine, the time it must register by, its executor slots,
and the seconds it has been billed for (so cost survives restarts).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pool", sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column("provider_id", sa.String(length=400), nullable=True))
        batch_op.add_column(sa.Column("profile", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("launched_at", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("register_by", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("slots", sa.Integer(), server_default="1", nullable=False))
        batch_op.add_column(sa.Column("last_error", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("billed_s", sa.Float(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("billing_since", sa.Float(), nullable=True))
        batch_op.create_index(batch_op.f("ix_nodes_pool_status"), ["pool", "status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_nodes_pool_status"))
        for column in ("billing_since", "billed_s", "last_error", "slots", "register_by", "launched_at"):
            batch_op.drop_column(column)
        for column in ("profile", "provider_id", "pool"):
            batch_op.drop_column(column)
