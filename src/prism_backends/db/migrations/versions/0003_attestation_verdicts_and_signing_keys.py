"""attestation verdicts and token signing keys

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from prism_backends.db.base import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "attestation_signing_keys",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("algorithm", sa.String(length=16), nullable=False),
        sa.Column("public_jwk", sa.Text(), nullable=False),
        sa.Column("sealed_private_key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("retired_at", UTCDateTime(), nullable=True),
        sa.Column("publish_until", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_attestation_signing_keys")),
    )
    with op.batch_alter_table("cvms", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "attestation_policy_source", sa.String(length=16), server_default="", nullable=False
            )
        )
        batch_op.add_column(
            sa.Column("attestation_error", sa.Text(), server_default="", nullable=False)
        )
        batch_op.add_column(
            sa.Column("attestations_verified", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("attestations_failed", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("attested_at", UTCDateTime(), nullable=True))

    # The defaults only fill the rows that exist; new rows get theirs from the code.
    with op.batch_alter_table("cvms", schema=None) as batch_op:
        for column in (
            "attestation_policy_source",
            "attestation_error",
            "attestations_verified",
            "attestations_failed",
        ):
            batch_op.alter_column(column, server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("cvms", schema=None) as batch_op:
        batch_op.drop_column("attested_at")
        batch_op.drop_column("attestations_failed")
        batch_op.drop_column("attestations_verified")
        batch_op.drop_column("attestation_error")
        batch_op.drop_column("attestation_policy_source")

    op.drop_table("attestation_signing_keys")
