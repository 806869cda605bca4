"""The Alembic migrations build exactly the schema the models describe, on SQLite
and PostgreSQL, and every migration can be undone and redone."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from cryptography import x509
from sqlalchemy import Engine, create_engine, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from prism_backends.agents.models import AgentCredential
from prism_backends.agents.pki import IssuedCertificate, create_ca
from prism_backends.db import migrate
from prism_backends.db.engine import make_engine
from prism_backends.db.metadata import metadata
from tests.conftest import BACKENDS, POSTGRES_ENV, postgres_base_url

TABLES = {
    "cvms",
    "cvm_tallies",
    "cvm_uptime_days",
    "sampled_slots",
    "agent_credentials",
    "agent_sessions",
    "agent_events",
    "attestation_signing_keys",
}
CVM_CHILDREN = ("cvm_uptime_days", "agent_credentials", "agent_sessions", "agent_events")


@pytest.fixture(params=BACKENDS)
def empty_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on a store nobody has migrated yet: a new SQLite file, or a new
    PostgreSQL schema of its own (so that downgrades touch no other test's store)."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
        yield engine
        engine.dispose()
        return
    base = postgres_base_url()
    if base is None:
        pytest.skip(f"PostgreSQL tests need {POSTGRES_ENV}")
    schema = f"prism_migrations_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    engine = make_engine(url.render_as_string(hide_password=False))
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def _diff(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, metadata))


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(migrate.alembic_config(create_engine("sqlite://")))


# --- models and migrations agree ----------------------------------------------------


def test_migrated_store_matches_the_models(empty_engine: Engine) -> None:
    migrate.upgrade(empty_engine)
    assert _diff(empty_engine) == []


def test_store_from_the_shared_fixture_matches_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        assert _diff(engine) == []
    finally:
        engine.dispose()


def test_the_comparison_would_see_a_missing_schema(empty_engine: Engine) -> None:
    # Guard against a vacuous comparison: an unmigrated store differs.
    added = {diff[1].name for diff in _diff(empty_engine) if diff[0] == "add_table"}
    assert added == TABLES


def _predicate(raw: Any) -> str:
    return re.sub(r"[\s()]", "", str(raw)).lower()


def test_partial_indexes_have_the_models_conditions(empty_engine: Engine) -> None:
    # Autogenerate does not compare index WHERE clauses; they carry the rules
    # "names are unique among live CVMs" and "one CVM per idempotency key".
    migrate.upgrade(empty_engine)
    dialect = empty_engine.dialect.name
    reflected = {
        index["name"]: index
        for table in TABLES
        for index in inspect(empty_engine).get_indexes(table)
    }
    for table in metadata.sorted_tables:
        for index in table.indexes:
            assert index.name in reflected, index.name
            found = reflected[index.name]
            assert bool(found["unique"]) == index.unique, index.name
            assert found["column_names"] == [column.name for column in index.columns]
            expected = index.dialect_options[dialect]["where"]
            actual = found.get("dialect_options", {}).get(f"{dialect}_where")
            if expected is None:
                assert actual is None, index.name
            else:
                assert actual is not None, index.name
                assert _predicate(actual) == _predicate(expected), index.name


@pytest.mark.parametrize("table", CVM_CHILDREN)
def test_rows_about_a_cvm_go_with_it(empty_engine: Engine, table: str) -> None:
    migrate.upgrade(empty_engine)
    (foreign_key,) = inspect(empty_engine).get_foreign_keys(table)
    assert foreign_key["referred_table"] == "cvms"
    assert foreign_key["constrained_columns"] == ["cvm_id"]
    assert foreign_key["options"].get("ondelete") == "CASCADE"


# --- upgrade, downgrade, upgrade ----------------------------------------------------


def test_there_is_one_head() -> None:
    assert len(_script().get_heads()) == 1


def test_fresh_store_is_not_current_until_migrated(empty_engine: Engine) -> None:
    assert migrate.current_revision(empty_engine) is None
    assert migrate.is_current(empty_engine) is False

    migrate.upgrade(empty_engine)

    assert migrate.current_revision(empty_engine) == migrate.head_revision(empty_engine)
    assert migrate.is_current(empty_engine) is True
    assert _tables(empty_engine) == TABLES


def test_upgrade_is_idempotent(empty_engine: Engine) -> None:
    migrate.upgrade(empty_engine)
    migrate.upgrade(empty_engine)
    assert migrate.is_current(empty_engine)
    assert _diff(empty_engine) == []


def test_upgrade_downgrade_upgrade_round_trip(empty_engine: Engine) -> None:
    migrate.upgrade(empty_engine)
    assert _tables(empty_engine) == TABLES

    migrate.downgrade(empty_engine, "base")

    assert migrate.current_revision(empty_engine) is None
    assert _tables(empty_engine) == set()
    assert not migrate.is_current(empty_engine)

    migrate.upgrade(empty_engine)

    assert migrate.is_current(empty_engine)
    assert _diff(empty_engine) == []


def test_every_revision_steps_down_and_up_again(empty_engine: Engine) -> None:
    revisions = [script.revision for script in reversed(list(_script().walk_revisions()))]
    assert revisions, "no migrations found"
    for revision in revisions:
        migrate.upgrade(empty_engine, revision)
        assert migrate.current_revision(empty_engine) == revision
        migrate.downgrade(empty_engine, "-1")
        migrate.upgrade(empty_engine, revision)
        assert migrate.current_revision(empty_engine) == revision
    assert _diff(empty_engine) == []


def test_the_store_is_usable_after_a_round_trip(empty_engine: Engine) -> None:
    migrate.upgrade(empty_engine)
    migrate.downgrade(empty_engine, "base")
    migrate.upgrade(empty_engine)
    with empty_engine.begin() as connection:
        _insert_cvm(connection, "c1")
        connection.execute(
            text(
                "INSERT INTO cvm_uptime_days (cvm_id, day, interval_seconds, seen, up)"
                " VALUES ('c1', :day, 300, :bits, :bits)"
            ),
            {"day": "2026-01-01", "bits": b"\x01"},
        )
        connection.execute(text("DELETE FROM cvms WHERE id = 'c1'"))
        remaining = connection.execute(text("SELECT count(*) FROM cvm_uptime_days")).scalar_one()
    assert remaining == 0


def _insert_cvm(connection: Any, cvm_id: str, status: str = "starting") -> None:
    connection.execute(
        text(
            "INSERT INTO cvms (id, domain_id, name, provider, cc_platform, vcpus,"
            " agent_log_level, agent_url, cvm_id, state, status, error,"
            " monthly_cost_cents, price_table_version, attestation_token,"
            " created_at, updated_at, request_digest, attempts,"
            " attestation_policy_source, attestation_error, attestations_verified,"
            " attestations_failed)"
            " VALUES (:id, 'd', :id, 'external', 'sev-snp', 2, 'info', '', '',"
            " 'pending', :status, '', 0, '', '', :now, :now, '', 0, '', '', 0, 0)"
        ),
        {"id": cvm_id, "status": status, "now": "2026-01-01 00:00:00"},
    )


def test_upgrading_to_tallies_counts_the_cvms_already_there(empty_engine: Engine) -> None:
    migrate.upgrade(empty_engine, "0004")
    with empty_engine.begin() as connection:
        for number, status in enumerate(["running", "running", "failed"]):
            _insert_cvm(connection, f"c{number}", status)
    migrate.upgrade(empty_engine)
    with empty_engine.begin() as connection:
        _insert_cvm(connection, "c9", "running")
        counts = connection.execute(
            text("SELECT status, sum(change) FROM cvm_tallies GROUP BY status ORDER BY status")
        ).all()
    assert [tuple(row) for row in counts] == [("failed", 1), ("running", 3)]


def _insert_credential(connection: Any, cvm_id: str, issued: IssuedCertificate) -> None:
    """A credential as revision 0005 kept it: one per CVM, keyed by the CVM."""
    connection.execute(
        text(
            "INSERT INTO agent_credentials (cvm_id, serial, cert_pem, sealed_key, not_after)"
            " VALUES (:cvm_id, :serial, :pem, :key, :not_after)"
        ),
        {
            "cvm_id": cvm_id,
            "serial": format(issued.serial, "x"),
            "pem": issued.cert_pem.decode(),
            "key": b"sealed",
            "not_after": issued.not_after.strftime("%Y-%m-%d %H:%M:%S"),
        },
    )


def test_upgrading_to_many_certificates_keeps_each_cvms_credential(empty_engine: Engine) -> None:
    ca = create_ca()
    migrate.upgrade(empty_engine, "0005")
    issued = {}
    with empty_engine.begin() as connection:
        for cvm_id in ("c1", "c2"):
            _insert_cvm(connection, cvm_id)
            issued[cvm_id] = ca.issue_client(cvm_id, "d", timedelta(days=30))
            _insert_credential(connection, cvm_id, issued[cvm_id])
        connection.execute(
            text("UPDATE agent_credentials SET revoked_at = :now WHERE cvm_id = 'c2'"),
            {"now": "2026-01-01 00:00:00"},
        )

    migrate.upgrade(empty_engine)

    with Session(empty_engine) as session:
        rows = {row.cvm_id: row for row in session.scalars(select(AgentCredential))}
    assert set(rows) == {"c1", "c2"}
    for cvm_id, row in rows.items():
        certificate = x509.load_pem_x509_certificate(row.cert_pem.encode())
        assert row.serial == format(issued[cvm_id].serial, "x")
        assert row.not_before == certificate.not_valid_before_utc
        assert row.sealed_key == b"sealed"
        assert (row.presented_at, row.expiry_warned_at) == (None, None)
    assert rows["c1"].revoked_at is None
    assert rows["c2"].revoked_at is not None
    assert rows["c1"].id != rows["c2"].id

    # Now a CVM may hold several; a downgrade keeps each CVM's newest one.
    newer = ca.issue_client("c1", "d", timedelta(days=30))
    with Session(empty_engine) as session, session.begin():
        session.add(
            AgentCredential(
                cvm_id="c1",
                serial=format(newer.serial, "x"),
                cert_pem=newer.cert_pem.decode(),
                sealed_key=b"newer",
                not_before=newer.not_before,
                not_after=newer.not_after,
            )
        )
    migrate.downgrade(empty_engine, "0005")
    with empty_engine.connect() as connection:
        kept = connection.execute(
            text("SELECT cvm_id, serial FROM agent_credentials ORDER BY cvm_id")
        ).all()
    assert [tuple(row) for row in kept] == [
        ("c1", format(newer.serial, "x")),
        ("c2", format(issued["c2"].serial, "x")),
    ]
