"""partial indexes on the queue's and the event log's hot path

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

The claim index and the lease-expiry index cover only queued and running jobs, and
SQLite's (txid, id) index skips its always-NULL txid, so a claim-and-complete
transaction writes fewer index pages.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_QUEUED, _RUNNING = sa.text("status = 'queued'"), sa.text("status = 'running'")


def upgrade() -> None:
    op.drop_index("ix_jobs_claim", table_name="jobs")
    op.create_index(
        "ix_jobs_claim",
        "jobs",
        ["type", sa.literal_column("priority DESC"), "id"],
        sqlite_where=_QUEUED,
        postgresql_where=_QUEUED,
    )
    op.drop_index("ix_jobs_status_lease_expires_at", table_name="jobs")
    op.create_index(
        "ix_jobs_lease_expiry", "jobs", ["lease_expires_at"], sqlite_where=_RUNNING, postgresql_where=_RUNNING
    )
    op.drop_index("ix_events_txid_id", table_name="events")
    op.create_index("ix_events_txid_id", "events", ["txid", "id"], sqlite_where=sa.text("txid IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_events_txid_id", table_name="events")
    op.create_index("ix_events_txid_id", "events", ["txid", "id"])
    op.drop_index("ix_jobs_lease_expiry", table_name="jobs")
    op.create_index("ix_jobs_status_lease_expires_at", "jobs", ["status", "lease_expires_at"])
    op.drop_index("ix_jobs_claim", table_name="jobs")
    op.create_index("ix_jobs_claim", "jobs", ["status", "type", sa.literal_column("priority DESC"), "id"])
