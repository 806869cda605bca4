"""Only a store that cannot serve is a 503: SQLite's OperationalError also
reports queries it cannot run, which are not outages; outages are logged."""

from __future__ import annotations

import logging
import sqlite3

import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from prism_backends.db import engine
from prism_backends.db.engine import make_engine, read_transaction, unit_of_work
from prism_backends.errors import StoreUnavailable


def _failing(message: str) -> sessionmaker[Session]:
    class Failing(Session):
        def commit(self) -> None:
            raise OperationalError("COMMIT", {}, sqlite3.OperationalError(message))

    return sessionmaker(make_engine("sqlite://"), class_=Failing)


@pytest.mark.parametrize(
    "message", ["database is locked", "disk I/O error", "database or disk is full"]
)
def test_outages_are_503_with_a_log_line(
    message: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "_outages", engine._OutageLog())
    caplog.set_level(logging.WARNING, logger="prism_backends.db.engine")
    with pytest.raises(StoreUnavailable), unit_of_work(_failing(message)):
        pass
    assert any(
        "store unavailable" in r.getMessage() and message in r.getMessage() for r in caplog.records
    )


@pytest.mark.parametrize("message", ["LIKE or GLOB pattern too complex", "too many SQL variables"])
def test_queries_the_store_cannot_run_are_not_outages(message: str) -> None:
    with pytest.raises(OperationalError), unit_of_work(_failing(message)):
        pass


def test_an_outage_is_one_log_line_every_few_seconds_with_a_count(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    monkeypatch.setattr(engine, "_outages", engine._OutageLog(every=5, clock=lambda: now[0]))
    caplog.set_level(logging.WARNING, logger="prism_backends.db.engine")
    failing = _failing("database is locked")
    for _ in range(100):
        with pytest.raises(StoreUnavailable), unit_of_work(failing):
            pass
    now[0] += 5
    with pytest.raises(StoreUnavailable), unit_of_work(failing):
        pass
    lines = [r.getMessage() for r in caplog.records if "store unavailable" in r.getMessage()]
    assert len(lines) == 2
    assert lines[1].endswith("(and 99 more since the last line)")


@pytest.mark.parametrize(
    ("message", "raised"),
    [("database is locked", StoreUnavailable), ("too many SQL variables", OperationalError)],
)
def test_read_transactions_tell_outages_apart_as_units_of_work_do(
    message: str, raised: type[Exception], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "_outages", engine._OutageLog())
    with pytest.raises(raised), read_transaction(make_engine("sqlite://")):
        raise OperationalError("SELECT", {}, sqlite3.OperationalError(message))
