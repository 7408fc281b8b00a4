"""auto deploy state: what automatic deploys of each environment did last, and why

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 03:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auto_deploy_state",
        sa.Column("app_id", sa.Integer(), nullable=False),
        sa.Column("environment", sa.String(length=64), nullable=False),
        sa.Column("branch", sa.String(length=200), nullable=False),
        sa.Column("sha", sa.String(length=40), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("date_checked", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["app_id"], ["app.id"], name=op.f("fk_auto_deploy_state_app_id_app"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("app_id", "environment", name=op.f("pk_auto_deploy_state")),
    )


def downgrade() -> None:
    op.drop_table("auto_deploy_state")
