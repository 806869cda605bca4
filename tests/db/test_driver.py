"""db/driver.Prepared sends what SQLAlchemy's own execution would, converts values
both ways as the column types do, and fails as SQLAlchemy's execution fails."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, bindparam, event, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from prism_backends.cvms.models import CVM
from prism_backends.db.driver import Prepared
from prism_backends.db.engine import make_engine, read_transaction, write_transaction
from prism_backends.errors import StoreUnavailable

_CVMS = CVM.__table__
_COLUMNS = [column.key for column in _CVMS.columns]
_ONE = select(_CVMS.c.id, _CVMS.c.created_at, _CVMS.c.attestation, _CVMS.c.vcpus).where(
    _CVMS.c.domain_id == bindparam("domain_id"), _CVMS.c.id == bindparam("cvm_id")
)
_BY_NAME = select(_CVMS.c.id).where(_CVMS.c.name == bindparam("name")).limit(1)


def _row(cvm_id: str, name: str, created_at: datetime) -> dict[str, Any]:
    return {
        **dict.fromkeys(_COLUMNS),
        "id": cvm_id,
        "domain_id": "dom-1",
        "name": name,
        "provider": "external",
        "cc_platform": "sev-snp",
        "vcpus": 4,
        "agent_log_level": "info",
        "agent_url": "",
        "cvm_id": cvm_id,
        "state": "provisioned",
        "status": "running",
        "error": "",
        "monthly_cost_cents": 100,
        "price_table_version": "v1",
        "attestation": b"\x00report\xff",
        "attestation_token": "",
        "attestation_policy_source": "",
        "attestation_error": "",
        "attestations_verified": 0,
        "attestations_failed": 0,
        "created_at": created_at,
        "updated_at": created_at,
        "request_digest": "d",
        "attempts": 0,
    }


_ID = "0b0e2f3a-1111-4222-8333-444455556666"
# Not UTC, and with microseconds: both conversions have work to do.
_WHEN = datetime(2026, 11, 30, 23, 59, 58, 123456, tzinfo=UTC).astimezone(
    timezone(timedelta(hours=-5))
)


def _statements(engine: Engine) -> list[tuple[str, Any]]:
    """What the engine's listeners see sent, as they see it."""
    sent: list[tuple[str, Any]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _sent(_conn: Any, _cursor: Any, sql: str, params: Any, *_rest: Any) -> None:
        sent.append((sql, params))

    return sent


def test_a_row_goes_in_and_comes_back_as_sqlalchemy_would_write_and_read_it(
    engine: Engine,
) -> None:
    with write_transaction(engine) as connection:
        Prepared(insert(CVM), columns=_COLUMNS).run(connection, _row(_ID, "a", _WHEN))
    with read_transaction(engine) as connection:
        ours = Prepared(_ONE).first(connection, {"domain_id": "dom-1", "cvm_id": _ID})
        theirs = connection.execute(_ONE, {"domain_id": "dom-1", "cvm_id": _ID}).one()
        stored = connection.execute(text("SELECT created_at FROM cvms")).scalar_one()
    assert ours == tuple(theirs)
    assert ours == (_ID, _WHEN, b"\x00report\xff", 4)
    assert ours[1].tzinfo is UTC  # as UTCDateTime reads it, on either store
    if engine.dialect.name == "sqlite":
        assert stored == "2026-11-30 23:59:58.123456"  # written as SQLAlchemy writes it


def _plain(values: Any) -> list[Any]:
    """Values as compared: in SQL order, a driver's bytes wrapper as its bytes."""
    listed = values.values() if isinstance(values, dict) else values
    return [bytes(value.obj) if hasattr(value, "obj") else value for value in listed]


def test_the_statement_and_its_values_are_those_sqlalchemy_sends(engine: Engine) -> None:
    sent = _statements(engine)
    row = _row(_ID, "a", _WHEN)
    with write_transaction(engine) as connection:
        connection.execute(insert(CVM).inline(), row)
        connection.execute(text("DELETE FROM cvms"))
        Prepared(insert(CVM), columns=_COLUMNS).run(connection, row)
        connection.execute(_BY_NAME, {"name": "a"})
        Prepared(_BY_NAME).first(connection, {"name": "a"})
    theirs, _, ours, theirs_by_name, ours_by_name = sent
    assert ours[0] == theirs[0]
    assert _plain(ours[1]) == _plain(theirs[1])  # converted as SQLAlchemy converts them
    assert ours_by_name == theirs_by_name  # the LIMIT's own value included


def _insert_twice(engine: Engine, statement: Prepared) -> None:
    with write_transaction(engine) as connection:
        statement.run(connection, _row(_ID, "a", _WHEN))
        statement.run(connection, _row(_ID, "b", _WHEN))  # the same id


def test_a_unique_violation_is_sqlalchemys_integrity_error(engine: Engine) -> None:
    with pytest.raises(IntegrityError):
        _insert_twice(engine, Prepared(insert(CVM), columns=_COLUMNS))
    with read_transaction(engine) as connection:
        assert Prepared(_BY_NAME).first(connection, {"name": "a"}) is None  # rolled back


def _terminate(database_url: str, pid: int) -> None:
    other = make_engine(database_url)
    with other.connect() as connection:
        connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        connection.commit()
    other.dispose()


def _read_on(engine: Engine, seen: list[DBAPIError]) -> None:
    with read_transaction(engine) as connection:
        try:
            Prepared(_BY_NAME).first(connection, {"name": "a"})
        except DBAPIError as exc:
            seen.append(exc)
            raise


def test_a_connection_the_server_ended_is_an_outage_and_is_replaced(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("a server ends a connection on PostgreSQL only")
    engine = make_engine(database_url, pool_size=1)  # the one pooled connection is the victim
    with read_transaction(engine) as connection:
        victim = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
    _terminate(database_url, victim)
    seen: list[DBAPIError] = []
    with pytest.raises(StoreUnavailable):
        _read_on(engine, seen)
    assert [exc.connection_invalidated for exc in seen] == [True]
    with read_transaction(engine) as connection:  # a new connection serves again
        assert Prepared(_BY_NAME).first(connection, {"name": "a"}) is None
        assert connection.execute(text("SELECT pg_backend_pid()")).scalar_one() != victim
    engine.dispose()


def test_statements_it_cannot_bind_as_they_are_are_refused(engine: Engine) -> None:
    with pytest.raises(TypeError, match="names the columns"):
        Prepared(insert(CVM))
    expanding = Prepared(select(_CVMS.c.id).where(_CVMS.c.id.in_(["a", "b"])))
    with (
        pytest.raises(TypeError, match="binds each parameter"),
        read_transaction(engine) as connection,
    ):
        expanding.all(connection, {})


def test_it_runs_inside_a_begun_transaction_only(engine: Engine) -> None:
    with engine.connect() as connection, pytest.raises(TypeError, match="begun transaction"):
        Prepared(_BY_NAME).first(connection, {"name": "a"})
