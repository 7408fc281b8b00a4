"""machines: agents that check in, what each machine runs (and ran), pull deploys' orders,
runs and output, and the fleet's events

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "machine",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("agent_version", sa.String(length=64), nullable=False),
        sa.Column("interval", sa.Float(), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("date_first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_machine")),
        sa.UniqueConstraint("name", name=op.f("uq_machine_name")),
    )
    op.create_table(
        "machine_app",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("machine_id", sa.Integer(), nullable=False),
        sa.Column("app_id", sa.Integer(), nullable=False),
        sa.Column("environment", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=200), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("can_deploy", sa.Boolean(), nullable=False),
        sa.Column("drift", sa.Boolean(), nullable=False),
        sa.Column("date_changed", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["app_id"], ["app.id"], name=op.f("fk_machine_app_app_id_app"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["machine_id"],
            ["machine.id"],
            name=op.f("fk_machine_app_machine_id_machine"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_machine_app")),
        sa.UniqueConstraint("machine_id", "app_id", "environment", name="uq_machine_app"),
    )
    with op.batch_alter_table("machine_app", schema=None) as batch_op:
        batch_op.create_index("ix_machine_app_env", ["app_id", "environment"], unique=False)

    op.create_table(
        "machine_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("machine_id", sa.Integer(), nullable=False),
        sa.Column("app_id", sa.Integer(), nullable=True),
        sa.Column("environment", sa.String(length=64), nullable=True),
        sa.Column("event", sa.String(length=20), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("date_created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("date_delivered", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["app_id"], ["app.id"], name=op.f("fk_machine_event_app_id_app"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["machine_id"],
            ["machine.id"],
            name=op.f("fk_machine_event_machine_id_machine"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_machine_event")),
    )
    with op.batch_alter_table("machine_event", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_machine_event_date_created"), ["date_created"], unique=False
        )

    op.create_table(
        "machine_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("machine_id", sa.Integer(), nullable=False),
        sa.Column("app_id", sa.Integer(), nullable=False),
        sa.Column("environment", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=200), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("date_created", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["app_id"], ["app.id"], name=op.f("fk_machine_version_app_id_app"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["machine_id"],
            ["machine.id"],
            name=op.f("fk_machine_version_machine_id_machine"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_machine_version")),
    )
    with op.batch_alter_table("machine_version", schema=None) as batch_op:
        batch_op.create_index(
            "ix_machine_version_at", ["machine_id", "app_id", "environment", "id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_machine_version_date_created"), ["date_created"], unique=False
        )

    op.create_table(
        "machine_output",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deploy_id", sa.Integer(), nullable=False),
        sa.Column("machine_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("date_created", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["deploy_id"],
            ["deploy.id"],
            name=op.f("fk_machine_output_deploy_id_deploy"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["machine_id"],
            ["machine.id"],
            name=op.f("fk_machine_output_machine_id_machine"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_machine_output")),
    )
    with op.batch_alter_table("machine_output", schema=None) as batch_op:
        batch_op.create_index("ix_machine_output_deploy", ["deploy_id", "id"], unique=False)

    op.create_table(
        "machine_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deploy_id", sa.Integer(), nullable=False),
        sa.Column("machine_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.Column("date_started", sa.DateTime(timezone=True), nullable=False),
        sa.Column("date_finished", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["deploy_id"],
            ["deploy.id"],
            name=op.f("fk_machine_run_deploy_id_deploy"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["machine_id"],
            ["machine.id"],
            name=op.f("fk_machine_run_machine_id_machine"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_machine_run")),
        sa.UniqueConstraint("deploy_id", "machine_id", name="uq_machine_run"),
    )
    op.create_table(
        "pull_order",
        sa.Column("deploy_id", sa.Integer(), nullable=False),
        sa.Column("app_id", sa.Integer(), nullable=False),
        sa.Column("environment", sa.String(length=64), nullable=False),
        sa.Column("sha", sa.String(length=40), nullable=False),
        sa.Column("machines", sa.JSON(), nullable=False),
        sa.Column("need", sa.Integer(), nullable=False),
        sa.Column("cancelled", sa.Boolean(), nullable=False),
        sa.Column("date_created", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["app_id"], ["app.id"], name=op.f("fk_pull_order_app_id_app"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["deploy_id"],
            ["deploy.id"],
            name=op.f("fk_pull_order_deploy_id_deploy"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("deploy_id", name=op.f("pk_pull_order")),
    )
    with op.batch_alter_table("pull_order", schema=None) as batch_op:
        batch_op.create_index("ix_pull_order_env", ["app_id", "environment"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("pull_order", schema=None) as batch_op:
        batch_op.drop_index("ix_pull_order_env")

    op.drop_table("pull_order")
    op.drop_table("machine_run")
    with op.batch_alter_table("machine_output", schema=None) as batch_op:
        batch_op.drop_index("ix_machine_output_deploy")

    op.drop_table("machine_output")
    with op.batch_alter_table("machine_version", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_machine_version_date_created"))
        batch_op.drop_index("ix_machine_version_at")

    op.drop_table("machine_version")
    with op.batch_alter_table("machine_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_machine_event_date_created"))

    op.drop_table("machine_event")
    with op.batch_alter_table("machine_app", schema=None) as batch_op:
        batch_op.drop_index("ix_machine_app_env")

    op.drop_table("machine_app")
    op.drop_table("machine")
