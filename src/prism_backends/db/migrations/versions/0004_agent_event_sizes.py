"""agent event sizes, for the per-CVM bound in bytes

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agent_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("size", sa.Integer(), server_default="0", nullable=False))
    # Characters, not bytes, for the rows that exist (SQLite and PostgreSQL both
    # have length()); new rows get their size in bytes from the code.
    op.execute("UPDATE agent_events SET size = length(message) + length(details)")
    with op.batch_alter_table("agent_events", schema=None) as batch_op:
        batch_op.alter_column("size", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("agent_events", schema=None) as batch_op:
        batch_op.drop_column("size")
