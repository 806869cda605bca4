"""agents, sessions, events and uptime days

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from prism_backends.db.base import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "sampled_slots",
        sa.Column("slot_at", UTCDateTime(), nullable=False),
        sa.Column("sampled_by", sa.String(length=64), nullable=False),
        sa.Column("sampled_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("slot_at", name=op.f("pk_sampled_slots")),
    )
    op.create_table(
        "agent_credentials",
        sa.Column("cvm_id", sa.String(length=36), nullable=False),
        sa.Column("serial", sa.String(length=40), nullable=False),
        sa.Column("cert_pem", sa.Text(), nullable=False),
        sa.Column("sealed_key", sa.LargeBinary(), nullable=False),
        sa.Column("not_after", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["cvm_id"],
            ["cvms.id"],
            name=op.f("fk_agent_credentials_cvm_id_cvms"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("cvm_id", name=op.f("pk_agent_credentials")),
        sa.UniqueConstraint("serial", name=op.f("uq_agent_credentials_serial")),
    )
    op.create_table(
        "agent_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("cvm_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("computation_id", sa.String(length=255), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["cvm_id"], ["cvms.id"], name=op.f("fk_agent_events_cvm_id_cvms"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_events")),
    )
    with op.batch_alter_table("agent_events", schema=None) as batch_op:
        batch_op.create_index("ix_agent_events_cvm_id_id", ["cvm_id", "id"], unique=False)
        batch_op.create_index("ix_agent_events_received_at", ["received_at"], unique=False)

    op.create_table(
        "agent_sessions",
        sa.Column("cvm_id", sa.String(length=36), nullable=False),
        sa.Column("replica", sa.String(length=64), nullable=False),
        sa.Column("connected_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["cvm_id"], ["cvms.id"], name=op.f("fk_agent_sessions_cvm_id_cvms"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("cvm_id", name=op.f("pk_agent_sessions")),
    )
    with op.batch_alter_table("agent_sessions", schema=None) as batch_op:
        batch_op.create_index("ix_agent_sessions_expires_at", ["expires_at"], unique=False)

    op.create_table(
        "cvm_uptime_days",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("cvm_id", sa.String(length=36), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("interval_seconds", sa.Integer(), nullable=False),
        sa.Column("seen", sa.LargeBinary(), nullable=False),
        sa.Column("up", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["cvm_id"], ["cvms.id"], name=op.f("fk_cvm_uptime_days_cvm_id_cvms"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cvm_uptime_days")),
        sa.UniqueConstraint(
            "cvm_id",
            "day",
            "interval_seconds",
            name=op.f("uq_cvm_uptime_days_cvm_id_day_interval_seconds"),
        ),
    )
    with op.batch_alter_table("cvm_stats", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cvm_stats_cvm_timestamp"))

    op.drop_table("cvm_stats")


def downgrade() -> None:

    op.create_table(
        "cvm_stats",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("cvm_id", sa.String(length=36), nullable=False),
        sa.Column("timestamp", UTCDateTime(), nullable=False),
        sa.Column("status", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["cvm_id"], ["cvms.id"], name=op.f("fk_cvm_stats_cvm_id_cvms"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cvm_stats")),
    )
    with op.batch_alter_table("cvm_stats", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_cvm_stats_cvm_timestamp"), ["cvm_id", "timestamp"], unique=False
        )

    op.drop_table("cvm_uptime_days")
    with op.batch_alter_table("agent_sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_agent_sessions_expires_at")

    op.drop_table("agent_sessions")
    with op.batch_alter_table("agent_events", schema=None) as batch_op:
        batch_op.drop_index("ix_agent_events_received_at")
        batch_op.drop_index("ix_agent_events_cvm_id_id")

    op.drop_table("agent_events")
    op.drop_table("agent_credentials")
    op.drop_table("sampled_slots")
