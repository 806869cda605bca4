"""SQLite's writers in one process take turns on a lock (db/turns.py): a writer
waits for the one before it, readers do not wait, and a turn never comes is an
outage as SQLite's own busy timeout is."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from prism_backends.db import engine as engine_module
from prism_backends.db.engine import (
    make_engine,
    make_session_factory,
    read_transaction,
    unit_of_work,
    write_transaction,
)
from prism_backends.db.migrate import upgrade
from prism_backends.db.turns import writer_turn
from prism_backends.errors import StoreUnavailable

_ONE_TALLY_ROW = text(
    "INSERT INTO cvm_tallies (domain_id, status, cc_platform, live, change)"
    " VALUES ('d', 'running', 'tdx', 1, 1)"
)


def _write_in_turn(engine: Engine) -> None:
    with unit_of_work(make_session_factory(engine)) as session:
        session.execute(text("SELECT 1"))


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


def _holding_a_write(engine: Engine) -> tuple[threading.Event, threading.Event, threading.Thread]:
    """A thread inside a write transaction until ``release`` is set."""
    inside, release = threading.Event(), threading.Event()

    def write() -> None:
        with write_transaction(engine) as connection:
            connection.execute(_ONE_TALLY_ROW)
            inside.set()
            release.wait(10)

    holder = threading.Thread(target=write)
    holder.start()
    assert inside.wait(10)
    return inside, release, holder


def test_a_writer_waits_its_turn_and_a_turn_never_given_is_an_outage(
    sqlite_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "_BUSY_TIMEOUT", 0.2)
    _, release, holder = _holding_a_write(sqlite_engine)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            _write_in_turn(sqlite_engine)
        # Refused by the turn's timeout: SQLite's own busy handler waits 30 s.
        assert time.monotonic() - started < 10
        with read_transaction(sqlite_engine) as connection:  # readers take no turn
            assert connection.execute(text("SELECT count(*) FROM cvm_tallies")).scalar() == 0
    finally:
        release.set()
        holder.join(10)
    with write_transaction(sqlite_engine) as connection:  # its turn, once the first is done
        assert connection.execute(text("SELECT count(*) FROM cvm_tallies")).scalar() == 1


def test_a_thread_may_take_its_own_turn_again(sqlite_engine: Engine) -> None:
    with writer_turn(sqlite_engine, timeout=1), writer_turn(sqlite_engine, timeout=1):
        pass  # reentrant: the second does not wait on the first


def test_other_engines_take_no_turns() -> None:
    elsewhere = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")  # never connects
    taken = threading.Event()

    def take() -> None:
        with writer_turn(elsewhere, timeout=1):
            taken.set()

    with writer_turn(elsewhere, timeout=1):
        other = threading.Thread(target=take)
        other.start()
        assert taken.wait(5)  # not held back by this thread's turn
    other.join(5)
    elsewhere.dispose()
