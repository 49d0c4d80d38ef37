"""node draining_since: a drain outlives a node's silence and its worker's restart

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

A draining node that went silent long enough to be marked lost (an evacuation upload that
kept failing once took its heartbeat down with it), or whose worker restarted, came back
active and forgot it was being drained. The node now records when it was asked to drain;
the column is cleared when it is undrained or starts a new life after a clean stop.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("draining_since", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_column("draining_since")
