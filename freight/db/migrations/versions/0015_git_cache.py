"""git_mirror: the git cache of each host as its last sweep left it (for /health)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03 16:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "git_mirror",
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("date_used", sa.DateTime(timezone=True), nullable=True),
        sa.Column("date_measured", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("host", "name", name=op.f("pk_git_mirror")),
    )


def downgrade() -> None:
    op.drop_table("git_mirror")
