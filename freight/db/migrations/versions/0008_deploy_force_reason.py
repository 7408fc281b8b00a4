"""deploy force reason: why a deploy was forced past someone else's lock

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 03:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deploy") as batch:
        batch.add_column(sa.Column("force_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deploy") as batch:
        batch.drop_column("force_reason")
