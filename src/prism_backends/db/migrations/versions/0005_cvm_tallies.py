"""cvm tallies: a list's total from a per-domain log of counted changes

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# PostgreSQL: one statement-level trigger per event, reading the statement's
# transition tables, so a bulk update (the reaper marking thousands of CVMs
# offline) adds one row per group it moved, not two per CVM; groups whose
# count did not change (an update of other columns) add nothing.
_POSTGRES_FUNCTION = """
CREATE FUNCTION cvm_tally_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO cvm_tallies (domain_id, status, cc_platform, live, change)
        SELECT domain_id, status, cc_platform, deleted_at IS NULL, count(*)
        FROM new_rows GROUP BY 1, 2, 3, 4;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO cvm_tallies (domain_id, status, cc_platform, live, change)
        SELECT domain_id, status, cc_platform, deleted_at IS NULL, -count(*)
        FROM old_rows GROUP BY 1, 2, 3, 4;
    ELSE
        INSERT INTO cvm_tallies (domain_id, status, cc_platform, live, change)
        SELECT domain_id, status, cc_platform, live, sum(change)
        FROM (
            SELECT domain_id, status, cc_platform, deleted_at IS NULL AS live, 1 AS change
            FROM new_rows
            UNION ALL
            SELECT domain_id, status, cc_platform, deleted_at IS NULL, -1 FROM old_rows
        ) AS moved
        GROUP BY 1, 2, 3, 4 HAVING sum(change) <> 0;
    END IF;
    RETURN NULL;
END
$$
"""
_POSTGRES_TRIGGERS = {
    "cvms_tally_insert": "AFTER INSERT ON cvms REFERENCING NEW TABLE AS new_rows",
    "cvms_tally_update": (
        "AFTER UPDATE ON cvms REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"
    ),
    "cvms_tally_delete": "AFTER DELETE ON cvms REFERENCING OLD TABLE AS old_rows",
}

# SQLite: row triggers (it has no others); the update one only fires when a
# counted column changed.
_SQLITE_TRIGGERS = {
    "cvms_tally_insert": """
        AFTER INSERT ON cvms BEGIN
            INSERT INTO cvm_tallies (domain_id, status, cc_platform, live, change)
            VALUES (NEW.domain_id, NEW.status, NEW.cc_platform, NEW.deleted_at IS NULL, 1);
        END""",
    "cvms_tally_update": """
        AFTER UPDATE OF domain_id, status, cc_platform, deleted_at ON cvms
        WHEN NEW.domain_id IS NOT OLD.domain_id OR NEW.status IS NOT OLD.status
            OR NEW.cc_platform IS NOT OLD.cc_platform
            OR (NEW.deleted_at IS NULL) IS NOT (OLD.deleted_at IS NULL)
        BEGIN
            INSERT INTO cvm_tallies (domain_id, status, cc_platform, live, change)
            VALUES (OLD.domain_id, OLD.status, OLD.cc_platform, OLD.deleted_at IS NULL, -1),
                   (NEW.domain_id, NEW.status, NEW.cc_platform, NEW.deleted_at IS NULL, 1);
        END""",
    "cvms_tally_delete": """
        AFTER DELETE ON cvms BEGIN
            INSERT INTO cvm_tallies (domain_id, status, cc_platform, live, change)
            VALUES (OLD.domain_id, OLD.status, OLD.cc_platform, OLD.deleted_at IS NULL, -1);
        END""",
}


def upgrade() -> None:
    op.create_table(
        "cvm_tallies",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("domain_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("cc_platform", sa.String(length=16), nullable=False),
        sa.Column("live", sa.Boolean(), nullable=False),
        sa.Column("change", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cvm_tallies")),
    )
    op.create_index("ix_cvm_tallies_domain", "cvm_tallies", ["domain_id"], unique=False)
    # The CVMs that exist, counted once; the triggers count every change after.
    op.execute(
        "INSERT INTO cvm_tallies (domain_id, status, cc_platform, live, change) "
        "SELECT domain_id, status, cc_platform, deleted_at IS NULL, count(*) "
        "FROM cvms GROUP BY domain_id, status, cc_platform, deleted_at IS NULL"
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_POSTGRES_FUNCTION)
        for name, when in _POSTGRES_TRIGGERS.items():
            op.execute(
                f"CREATE TRIGGER {name} {when} "
                "FOR EACH STATEMENT EXECUTE FUNCTION cvm_tally_changes()"
            )
    else:
        for name, body in _SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {body}")


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for name in _POSTGRES_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + (" ON cvms" if postgres else ""))
    if postgres:
        op.execute("DROP FUNCTION IF EXISTS cvm_tally_changes()")
    op.drop_index("ix_cvm_tallies_domain", table_name="cvm_tallies")
    op.drop_table("cvm_tallies")
