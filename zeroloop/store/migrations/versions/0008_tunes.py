"""tunes: population-based training of a config key's settings, and the trials of its variants

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03

`tunes`: one row per `zeroloop tune`: its config key, sampler, population size, budget
(CPU- and GPU-seconds) and what it spent, the search space, its progress record (the
population's joint ratings and each variant's Elo against its CPU-seconds), and when it
finished or was adopted.

`tune_trials`: each set of settings one variant ran: where it came from (proposed by the
sampler, or copied from a stronger trial and perturbed), the model it started from, the
rating it reached and the seconds it spent, and why it ended.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "tunes",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("config_key", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("sampler", sa.String(length=20), nullable=False),
        sa.Column("variants", sa.Integer(), nullable=False),
        sa.Column("budget_cpu_s", sa.Float(), nullable=True),
        sa.Column("budget_gpu_s", sa.Float(), nullable=True),
        sa.Column("spent_cpu_s", sa.Float(), nullable=False),
        sa.Column("spent_gpu_s", sa.Float(), nullable=False),
        sa.Column("space", _JSON, nullable=False),
        sa.Column("progress", _JSON, nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("adopted_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tunes")),
    )
    op.create_index(op.f("ix_tunes_config_key_status"), "tunes", ["config_key", "status"], unique=False)
    op.create_table(
        "tune_trials",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("tune_id", sa.BigInteger(), nullable=False),
        sa.Column("variant", sa.String(length=200), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("settings", _JSON, nullable=False),
        sa.Column("origin", sa.String(length=20), nullable=False),
        sa.Column("parent_id", sa.BigInteger(), nullable=True),
        sa.Column("start_model_id", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("elo", sa.Float(), nullable=True),
        sa.Column("elo_stderr", sa.Float(), nullable=True),
        sa.Column("cpu_s", sa.Float(), nullable=False),
        sa.Column("gpu_s", sa.Float(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tune_id"], ["tunes.id"], name=op.f("fk_tune_trials_tune_id_tunes"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tune_trials")),
    )
    op.create_index(op.f("ix_tune_trials_tune_id_status"), "tune_trials", ["tune_id", "status"], unique=False)
    op.create_index(op.f("ix_tune_trials_variant"), "tune_trials", ["variant"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_tune_trials_variant"), table_name="tune_trials")
    op.drop_index(op.f("ix_tune_trials_tune_id_status"), table_name="tune_trials")
    op.drop_table("tune_trials")
    op.drop_index(op.f("ix_tunes_config_key_status"), table_name="tunes")
    op.drop_table("tunes")
