"""agent credentials: one row per certificate, several per CVM

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

The primary key moves from ``cvm_id`` to a new ``id``, which neither backend
can alter in place; the table is rebuilt under its name and the rows copied
in. ``not_before`` of the existing certificates is read from the certificates
themselves. A downgrade keeps each CVM's newest certificate only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op
from cryptography import x509

from prism_backends.db.base import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_OLD = "agent_credentials_0005"
_COPIED = ("cvm_id", "serial", "cert_pem", "sealed_key", "not_after", "revoked_at")
_BATCH = 1000
_UNWARNED = "revoked_at IS NULL AND expiry_warned_at IS NULL"


def _set_aside(constraints: tuple[str, ...]) -> None:
    """Rename the table out of the way. PostgreSQL's constraint names are its
    indexes' names, unique in the schema: they move aside too."""
    op.rename_table("agent_credentials", _OLD)
    if op.get_bind().dialect.name == "postgresql":
        for name in constraints:
            op.execute(f'ALTER TABLE {_OLD} RENAME CONSTRAINT "{name}" TO "{name}_0005"')


def _old_table() -> sa.TableClause:
    """The table set aside, typed (SQLite's times come back as text otherwise)."""
    times = ("not_after", "revoked_at")
    return sa.table(
        _OLD,
        sa.column("id", sa.BigInteger()),
        *(sa.column(name, UTCDateTime() if name in times else None) for name in _COPIED),
    )


def _rows() -> Iterator[list[dict[str, Any]]]:
    old = _old_table()
    result = op.get_bind().execute(sa.select(*(old.c[name] for name in _COPIED)))
    while batch := result.fetchmany(_BATCH):
        yield [dict(row._mapping) for row in batch]


def upgrade() -> None:
    _set_aside(
        (
            "pk_agent_credentials",
            "uq_agent_credentials_serial",
            "fk_agent_credentials_cvm_id_cvms",
        )
    )
    created = op.create_table(
        "agent_credentials",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("cvm_id", sa.String(length=36), nullable=False),
        sa.Column("serial", sa.String(length=40), nullable=False),
        sa.Column("cert_pem", sa.Text(), nullable=False),
        sa.Column("sealed_key", sa.LargeBinary(), nullable=False),
        sa.Column("not_before", UTCDateTime(), nullable=False),
        sa.Column("not_after", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.Column("presented_at", UTCDateTime(), nullable=True),
        sa.Column("expiry_warned_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["cvm_id"],
            ["cvms.id"],
            name=op.f("fk_agent_credentials_cvm_id_cvms"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_credentials")),
        sa.UniqueConstraint("serial", name=op.f("uq_agent_credentials_serial")),
    )
    assert created is not None
    for batch in _rows():
        for row in batch:
            certificate = x509.load_pem_x509_certificate(row["cert_pem"].encode())
            row["not_before"] = certificate.not_valid_before_utc
        op.bulk_insert(created, batch)
    op.drop_table(_OLD)
    op.create_index("ix_agent_credentials_cvm_id_id", "agent_credentials", ["cvm_id", "id"])
    op.create_index(
        "ix_agent_credentials_not_after",
        "agent_credentials",
        ["not_after"],
        sqlite_where=sa.text(_UNWARNED),
        postgresql_where=sa.text(_UNWARNED),
    )


def downgrade() -> None:
    op.drop_index("ix_agent_credentials_not_after", table_name="agent_credentials")
    op.drop_index("ix_agent_credentials_cvm_id_id", table_name="agent_credentials")
    _set_aside(
        (
            "pk_agent_credentials",
            "uq_agent_credentials_serial",
            "fk_agent_credentials_cvm_id_cvms",
        )
    )
    created = op.create_table(
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
    assert created is not None
    old = _old_table()
    newest = sa.select(sa.func.max(old.c.id)).group_by(old.c.cvm_id).scalar_subquery()
    op.execute(
        sa.insert(created).from_select(
            list(_COPIED), sa.select(*(old.c[name] for name in _COPIED)).where(old.c.id.in_(newest))
        )
    )
    op.drop_table(_OLD)
