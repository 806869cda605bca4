"""Only a store that cannot serve is a 503: SQLite's OperationalError also
reports queries it cannot run, which are not outages; outages are logged."""

from __future__ import annotations

import logging
import sqlite3

import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from prism_backends.db.engine import make_engine, unit_of_work
from prism_backends.errors import StoreUnavailable


def _failing(message: str) -> sessionmaker[Session]:
    class Failing(Session):
        def commit(self) -> None:
            raise OperationalError("COMMIT", {}, sqlite3.OperationalError(message))

    return sessionmaker(make_engine("sqlite://"), class_=Failing)


@pytest.mark.parametrize(
    "message", ["database is locked", "disk I/O error", "database or disk is full"]
)
def test_outages_are_503_with_a_log_line(message: str, caplog: pytest.LogCaptureFixture) -> None:
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
