"""revoked sessions: dashboard sessions ended by logging out before their cookie expired

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 02:14:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "revoked_session",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("date_expires", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_revoked_session")),
    )


def downgrade() -> None:
    op.drop_table("revoked_session")
