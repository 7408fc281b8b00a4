"""notifier state: what a notifier keeps between one deploy's events

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 02:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notifier_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deploy_id", sa.Integer(), nullable=False),
        sa.Column("notifier", sa.String(length=100), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["deploy_id"],
            ["deploy.id"],
            name=op.f("fk_notifier_state_deploy_id_deploy"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifier_state")),
        sa.UniqueConstraint("deploy_id", "notifier", name="uq_notifier_state"),
    )


def downgrade() -> None:
    op.drop_table("notifier_state")
