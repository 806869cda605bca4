"""Read-only units of work (the GET routes): on SQLite they take no write
lock, so they read beside a writer instead of queueing behind it, and they
cannot write; the next writer on the same connection writes as before."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from prism_backends.cvms.models import CVM
from prism_backends.db.engine import (
    make_engine,
    make_session_factory,
    read_transaction,
    unit_of_work,
    write_transaction,
)
from prism_backends.db.migrate import upgrade
from prism_backends.errors import StoreUnavailable
from tests.factories import insert_cvm


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(engine)
    yield make_session_factory(engine)
    engine.dispose()


def test_a_reader_is_not_queued_behind_a_writer(sessions: sessionmaker[Session]) -> None:
    cvm_id = insert_cvm(sessions)
    writing, done = threading.Event(), threading.Event()

    def writer() -> None:
        with unit_of_work(sessions) as session:
            session.execute(update(CVM).where(CVM.id == cvm_id).values(name="renamed"))
            writing.set()
            done.wait(10)  # holds the write lock meanwhile

    thread = threading.Thread(target=writer)
    thread.start()
    assert writing.wait(10)
    started = time.monotonic()
    try:
        with unit_of_work(sessions, read_only=True) as session:
            name = session.scalar(select(CVM.name).where(CVM.id == cvm_id))
        waited = time.monotonic() - started
    finally:
        done.set()
        thread.join()
    assert name != "renamed"  # the snapshot before the writer's commit
    assert waited < 1.0  # a BEGIN IMMEDIATE would have waited for the writer


def test_a_read_only_unit_cannot_write_and_the_next_writer_can(
    sessions: sessionmaker[Session],
) -> None:
    cvm_id = insert_cvm(sessions)
    with (
        pytest.raises((StoreUnavailable, OperationalError)),
        unit_of_work(sessions, read_only=True) as session,
    ):
        session.execute(update(CVM).where(CVM.id == cvm_id).values(name="sneaky"))
    with unit_of_work(sessions) as session:
        session.execute(update(CVM).where(CVM.id == cvm_id).values(name="honest"))
    with unit_of_work(sessions, read_only=True) as session:
        assert session.scalar(select(CVM.name).where(CVM.id == cvm_id)) == "honest"
        assert session.scalar(select(func.count()).select_from(CVM)) == 1


def test_a_read_transaction_reads_beside_a_writer_and_cannot_write(
    sessions: sessionmaker[Session],
) -> None:
    """The view and list routes' unit (a plain Connection) holds to the same."""
    cvm_id = insert_cvm(sessions)
    store = sessions.kw["bind"]
    writing, done = threading.Event(), threading.Event()

    def writer() -> None:
        with unit_of_work(sessions) as session:
            session.execute(update(CVM).where(CVM.id == cvm_id).values(name="renamed"))
            writing.set()
            done.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    assert writing.wait(10)
    started = time.monotonic()
    try:
        with read_transaction(store) as connection:
            name = connection.scalar(select(CVM.name).where(CVM.id == cvm_id))
        waited = time.monotonic() - started
    finally:
        done.set()
        thread.join()
    assert name != "renamed"
    assert waited < 1.0
    with pytest.raises((StoreUnavailable, OperationalError)), read_transaction(store) as connection:
        connection.execute(update(CVM).where(CVM.id == cvm_id).values(name="sneaky"))
    with unit_of_work(sessions, read_only=True) as session:
        assert session.scalar(select(CVM.name).where(CVM.id == cvm_id)) == "renamed"


def test_a_writer_that_cannot_take_the_lock_is_an_outage_not_an_error(tmp_path: Path) -> None:
    """BEGIN IMMEDIATE goes to the driver directly; a lock held past the busy
    timeout must still be a 503, as through SQLAlchemy, for both kinds of unit."""
    path = tmp_path / "store.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()

    @event.listens_for(engine, "connect")
    def impatient(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout = 50")

    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailable), write_transaction(engine):
            pytest.fail("the transaction began without the lock")
        with pytest.raises(StoreUnavailable), unit_of_work(make_session_factory(engine)) as s:
            s.execute(select(func.count()).select_from(CVM))
    finally:
        holder.rollback()
        holder.close()
    with write_transaction(engine) as connection:  # the lock is free again
        connection.execute(update(CVM).values(name="x"))
    engine.dispose()


def test_query_only_is_switched_only_when_a_connection_changes_mode(tmp_path: Path) -> None:
    """Setting it expires the connection's prepared statements, so each read would
    prepare its statement anew; the mode each unit sees is still its own."""
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}", pool_size=1)
    upgrade(engine)
    engine.dispose()
    switches: list[str] = []

    @event.listens_for(engine, "connect")
    def traced(dbapi_connection: Any, _record: Any) -> None:
        def note(statement: str) -> None:
            if statement.startswith("PRAGMA query_only ="):
                switches.append(statement)

        dbapi_connection.set_trace_callback(note)

    def mode(connection: Any) -> int:
        return int(connection.exec_driver_sql("PRAGMA query_only").scalar())

    seen = []
    for unit in (read_transaction, read_transaction, write_transaction, read_transaction):
        with unit(engine) as connection:
            seen.append(mode(connection))
    engine.dispose()

    assert seen == [1, 1, 0, 1]
    assert switches == ["PRAGMA query_only = 1", "PRAGMA query_only = 0", "PRAGMA query_only = 1"]
