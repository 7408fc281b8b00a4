"""freezes: locks that start later, end at a set time and hold their owner too; what a forced
deploy went past

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03 16:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("lock") as batch:
        batch.add_column(
            sa.Column("freeze", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("date_starts", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("date_begun", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("deploy") as batch:
        batch.add_column(sa.Column("forced_past", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deploy") as batch:
        batch.drop_column("forced_past")
    with op.batch_alter_table("lock") as batch:
        batch.drop_column("date_begun")
        batch.drop_column("date_starts")
        batch.drop_column("freeze")
