"""readings: what the leader read of queue, nodes, cost and pipelines at a moment, for the dashboard's charts

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

One row per reading (every `dashboard.readings_interval_s`), its figures as one JSON
document; zeroloop.control.readings writes and thins them. Each reading counts the jobs
that finished since the previous one: a partial index on jobs.finished_at (the finished
jobs only) finds them without scanning the table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "readings",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column(
            "figures", sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_readings")),
    )
    op.create_index(op.f("ix_readings_at"), "readings", ["at"], unique=False)
    finished = sa.text("finished_at IS NOT NULL")
    op.create_index(
        "ix_jobs_finished_at", "jobs", ["finished_at"], unique=False, sqlite_where=finished, postgresql_where=finished
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_finished_at", table_name="jobs")
    op.drop_index(op.f("ix_readings_at"), table_name="readings")
    op.drop_table("readings")
