"""deploy hand-overs: how many times a deploy was handed to the orchestrator

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 01:52:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deploy") as batch:
        batch.add_column(sa.Column("hand_overs", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("deploy") as batch:
        batch.drop_column("hand_overs")
