"""create cvms and cvm_stats

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from prism_backends.db.base import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "cvms",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("domain_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("cc_platform", sa.String(length=16), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("agent_log_level", sa.String(length=8), nullable=False),
        sa.Column("agent_url", sa.String(length=2048), nullable=False),
        sa.Column("cvm_id", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("monthly_cost_cents", sa.Integer(), nullable=False),
        sa.Column("price_table_version", sa.String(length=64), nullable=False),
        sa.Column("attestation", sa.LargeBinary(), nullable=True),
        sa.Column("attestation_token", sa.Text(), nullable=False),
        sa.Column("attestation_policy", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("deleted_at", UTCDateTime(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("request_digest", sa.String(length=64), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", UTCDateTime(), nullable=True),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("first_failure_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cvms")),
    )
    with op.batch_alter_table("cvms", schema=None) as batch_op:
        batch_op.create_index(
            "ix_cvms_domain_live_created",
            ["domain_id", "created_at", "id"],
            unique=False,
            sqlite_where=sa.text("deleted_at IS NULL"),
            postgresql_where=sa.text("deleted_at IS NULL"),
            postgresql_include=["status", "cc_platform", "name"],
        )
        batch_op.create_index(
            "ix_cvms_domain_deleted_created",
            ["domain_id", "created_at", "id"],
            unique=False,
            sqlite_where=sa.text("deleted_at IS NOT NULL"),
            postgresql_where=sa.text("deleted_at IS NOT NULL"),
        )
        batch_op.create_index(
            "ix_cvms_pending_work",
            ["next_attempt_at"],
            unique=False,
            sqlite_where=sa.text("next_attempt_at IS NOT NULL"),
            postgresql_where=sa.text("next_attempt_at IS NOT NULL"),
        )
        batch_op.create_index(
            "uq_cvms_domain_idempotency_key",
            ["domain_id", "idempotency_key"],
            unique=True,
            sqlite_where=sa.text("idempotency_key IS NOT NULL"),
            postgresql_where=sa.text("idempotency_key IS NOT NULL"),
        )
        batch_op.create_index(
            "uq_cvms_domain_live_name",
            ["domain_id", "name"],
            unique=True,
            sqlite_where=sa.text("deleted_at IS NULL"),
            postgresql_where=sa.text("deleted_at IS NULL"),
        )

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
        batch_op.create_index("ix_cvm_stats_cvm_timestamp", ["cvm_id", "timestamp"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("cvm_stats", schema=None) as batch_op:
        batch_op.drop_index("ix_cvm_stats_cvm_timestamp")

    op.drop_table("cvm_stats")
    with op.batch_alter_table("cvms", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_cvms_domain_live_name",
            sqlite_where=sa.text("deleted_at IS NULL"),
            postgresql_where=sa.text("deleted_at IS NULL"),
        )
        batch_op.drop_index(
            "uq_cvms_domain_idempotency_key",
            sqlite_where=sa.text("idempotency_key IS NOT NULL"),
            postgresql_where=sa.text("idempotency_key IS NOT NULL"),
        )
        batch_op.drop_index(
            "ix_cvms_pending_work",
            sqlite_where=sa.text("next_attempt_at IS NOT NULL"),
            postgresql_where=sa.text("next_attempt_at IS NOT NULL"),
        )
        batch_op.drop_index("ix_cvms_domain_deleted_created")
        batch_op.drop_index("ix_cvms_domain_live_created")

    op.drop_table("cvms")
