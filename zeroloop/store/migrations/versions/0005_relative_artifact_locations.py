"""relative artifact locations: a shared copy is recorded by its key under the artifact location

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

Until now a shared copy's row held the absolute URL of its file
(`file:///home/me/.zeroloop/artifacts/model/ab/ab...`), so a data directory that was
moved or restored elsewhere still pointed at the original's files. From here on the row
holds the key relative to the artifact location (`model/ab/ab...`), resolved against the
configured location when read. This rewrites every shared copy (no node) whose URL ends
in its own key; copies held on one node keep their absolute URL. A second absolute row
of the same copy (the location was renamed once before) is folded into the first.

Downgrade leaves the rows relative: the location they were under is not known here.
Going back to a zeroloop before this revision means restoring a backup taken before it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.text(
            "SELECT c.sha256, c.location, a.kind FROM artifact_copies c "
            "JOIN artifacts a ON a.sha256 = c.sha256 WHERE c.node IS NULL"
        )
    ).all()
    taken = {(sha, location) for sha, location, _kind in rows if "://" not in location}
    for sha, location, kind in rows:
        key = f"{kind}/{sha[:2]}/{sha}"
        if "://" not in location or not location.endswith("/" + key):
            continue
        if (sha, key) in taken:
            conn.execute(
                sa.text("DELETE FROM artifact_copies WHERE sha256 = :sha AND location = :location"),
                {"sha": sha, "location": location},
            )
            continue
        conn.execute(
            sa.text("UPDATE artifact_copies SET location = :key WHERE sha256 = :sha AND location = :location"),
            {"key": key, "sha": sha, "location": location},
        )
        taken.add((sha, key))


def downgrade() -> None:
    pass
