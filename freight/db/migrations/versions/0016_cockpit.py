"""deploy_step (each step's state and times), change (what the dashboards' streams read),
an index on deploy.date_started (deploys per day)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03 19:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deploy_step",
        sa.Column("deploy_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("date_started", sa.DateTime(timezone=True), nullable=False),
        sa.Column("date_finished", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["deploy_id"],
            ["deploy.id"],
            name=op.f("fk_deploy_step_deploy_id_deploy"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("deploy_id", "name", name=op.f("pk_deploy_step")),
    )
    op.create_table(
        "change",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("deploy_id", sa.Integer(), nullable=True),
        sa.Column("log_only", sa.Boolean(), nullable=False),
        sa.Column("date_created", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_change")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_change_date_created"), "change", ["date_created"])
    # Deploys per day on the overview read the last month of a long history.
    op.create_index("ix_deploy_date_started", "deploy", ["date_started"])


def downgrade() -> None:
    op.drop_index("ix_deploy_date_started", table_name="deploy")
    op.drop_index(op.f("ix_change_date_created"), table_name="change")
    op.drop_table("change")
    op.drop_table("deploy_step")
