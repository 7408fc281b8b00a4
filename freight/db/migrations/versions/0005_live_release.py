"""live release: what is live in each app/environment, filled from the history

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 02:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "live_release",
        sa.Column("app_id", sa.Integer(), nullable=False),
        sa.Column("environment", sa.String(length=64), nullable=False),
        sa.Column("deploy_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["app_id"], ["app.id"], name=op.f("fk_live_release_app_id_app"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["deploy_id"],
            ["deploy.id"],
            name=op.f("fk_live_release_deploy_id_deploy"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("app_id", "environment", name=op.f("pk_live_release")),
    )
    # One app/env's deploys run one at a time in id order: the latest finished has the top id.
    op.execute(
        "INSERT INTO live_release (app_id, environment, deploy_id) "
        "SELECT app_id, environment, max(id) FROM deploy WHERE status = 'finished' "
        "GROUP BY app_id, environment"
    )


def downgrade() -> None:
    op.drop_table("live_release")
