"""work queues: the queues each worker serves, and why a deploy's run waits for a worker

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 09:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("worker") as batch:
        # Workers that reported before queues existed served the default one.
        batch.add_column(
            sa.Column("queues", sa.JSON(), nullable=False, server_default='["deploys"]')
        )
    with op.batch_alter_table("deploy") as batch:
        batch.add_column(sa.Column("waiting_for", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deploy") as batch:
        batch.drop_column("waiting_for")
    with op.batch_alter_table("worker") as batch:
        batch.drop_column("queues")
