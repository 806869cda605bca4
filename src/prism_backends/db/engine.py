"""Engines and sessions for SQLite (embedded) and PostgreSQL (production)."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    String,
    any_,
    bindparam,
    create_engine,
    event,
    func,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import QueryableAttribute, Session, sessionmaker

from prism_backends.db.turns import take_turns, writer_turn
from prism_backends.errors import StoreUnavailable

SQLITE_BUSY_TIMEOUT_MS = 30_000
_BUSY_TIMEOUT = SQLITE_BUSY_TIMEOUT_MS / 1000  # seconds: a writer's turn waits as long


log = logging.getLogger(__name__)


# The HTTP API runs its handlers on anyio's thread pool (40 threads): a pool
# as large keeps every connection open, on either store. A smaller pool with
# overflow opened and closed a connection per request under load (on SQLite
# each one also ran _configure_sqlite).
DEFAULT_POOL_SIZE = 40
POOL_OVERFLOW = 10  # the workers, the sampler and the agents endpoint beside them


def make_engine(url: str, *, pool_size: int = DEFAULT_POOL_SIZE) -> Engine:
    """Create an engine tuned for the backend the URL names.

    No pre-ping on PostgreSQL (a round trip per checkout): a connection the
    server closed fails its next request (503), and that invalidates every
    pooled connection opened before it, so the next requests connect afresh.
    """
    if url.startswith("sqlite"):
        engine = create_engine(
            url, pool_size=pool_size, connect_args={"check_same_thread": False, "timeout": 30}
        )
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_immediate)
        take_turns(engine)
        return engine
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=POOL_OVERFLOW,
        pool_pre_ping=False,
        pool_recycle=1800,
    )


def _configure_sqlite(dbapi_connection: Any, record: Any) -> None:
    # Let SQLAlchemy, not the driver, issue BEGIN, so that every transaction
    # can take the write lock up front (see _begin_immediate).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
    record.info[QUERY_ONLY] = False  # SQLite's default
    # PostgreSQL's set_bit/get_bit on bytea, for statements both stores run
    # (the uptime sampler's): bit n is bit n % 8, least significant first, of byte n // 8.
    dbapi_connection.create_function("set_bit", 3, _set_bit, deterministic=True)
    dbapi_connection.create_function("get_bit", 2, _get_bit, deterministic=True)


def _set_bit(value: bytes, index: int, bit: int) -> bytes:
    changed = bytearray(value)
    if bit:
        changed[index // 8] |= 1 << (index % 8)
    else:
        changed[index // 8] &= ~(1 << (index % 8)) & 0xFF
    return bytes(changed)


def _get_bit(value: bytes, index: int) -> int:
    return (value[index // 8] >> (index % 8)) & 1


READ_ONLY = "prism_read_only"  # execution option: the unit of work only reads


QUERY_ONLY = "prism_query_only"  # a SQLite connection's query_only, in its pool record's info


def sqlite_begin(read_only: bool, query_only: bool | None) -> tuple[str, ...]:
    """What a SQLite transaction sends first, on a connection whose ``query_only``
    is ``query_only`` now: the switch, only when it changes, and BEGIN."""
    begin = "BEGIN" if read_only else "BEGIN IMMEDIATE"
    if query_only is read_only:
        return (begin,)
    return (f"PRAGMA query_only = {int(read_only)}", begin)


def _begin_immediate(connection: Any) -> None:
    # SQLite has one writer; a writing transaction takes the lock at BEGIN,
    # which avoids the deadlock of two readers that both try to upgrade and
    # gives row leases their meaning. A reading one takes no lock (WAL: it
    # reads a snapshot beside the writer), and query_only makes SQLite refuse
    # any write it would attempt, rather than let it try to upgrade.
    #
    # query_only is switched only when it changes: setting it expires the
    # connection's prepared statements, and preparing a view's statement again
    # cost about 20 µs, twice the statement's own work.
    #
    # Sent on the driver's connection: through SQLAlchemy's execution each
    # statement cost about 45 µs of CPU, as much as a view's own statement. An
    # error is wrapped as SQLAlchemy's would be, so "database is locked" is
    # still an outage (503).
    read_only = bool(connection.get_execution_options().get(READ_ONLY))
    pooled = connection.connection
    driver = pooled.driver_connection
    for statement in sqlite_begin(read_only, pooled.info.get(QUERY_ONLY)):
        try:
            driver.execute(statement)
        except sqlite3.Error as exc:
            pooled.info.pop(QUERY_ONLY, None)  # unknown now: set it again next time
            raise DBAPIError.instance(statement, (), exc, sqlite3.Error) from exc
    pooled.info[QUERY_ONLY] = read_only


def store_answers(engine: Engine) -> bool:
    """Whether the store answers a trivial statement now (the readiness probe)."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return False
    return True


def upsert_insert(session: Session) -> Any:
    """The store's own ``insert`` construct, the one that takes ON CONFLICT
    clauses (SQLite and PostgreSQL both have them, each in its dialect)."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def one_of(session: Session, column: QueryableAttribute[str], values: Sequence[str]) -> Any:
    """``column IN values`` with the values bound as one parameter: a text array
    on PostgreSQL, a JSON array read by ``json_each`` on SQLite. An expanding IN
    binds and renders a parameter per value; for the agents' batches of a
    thousand CVMs that cost more CPU than the statement's own work."""
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=postgresql.ARRAY(String)))
    listed = func.json_each(bindparam(None, json.dumps(list(values)), type_=String))
    return column.in_(select(listed.table_valued("value").c.value))


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def unit_of_work(factory: sessionmaker[Session], *, read_only: bool = False) -> Iterator[Session]:
    """One transaction: commit on success, roll back on error.

    This is the boundary that owns the transaction; services never commit.
    Store outages surface as ``StoreUnavailable`` (503). ``read_only`` units
    (the GET routes) take no write lock on SQLite, and may not write.
    """
    writes_on = None if read_only else factory.kw.get("bind")
    with _outages_unavailable(), writer_turn(writes_on, timeout=_BUSY_TIMEOUT):
        session = factory()
        try:
            if read_only:
                session.connection(execution_options={READ_ONLY: True})
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    """A read-only unit of work on a plain Connection, for Core statements.

    The view and list routes read rows, not objects: an ORM Session around
    their statements only adds its own bookkeeping (about a quarter of a
    millisecond of CPU a request, bench/README.md). Otherwise as
    ``unit_of_work(read_only=True)``: committed at the end, rolled back on
    error, no write lock on SQLite, ``StoreUnavailable`` on an outage.
    """
    with _outages_unavailable(), engine.connect() as connection:
        connection.execution_options(**{READ_ONLY: True})
        with connection.begin():
            yield connection


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A unit of work that writes, on a plain Connection, for Core statements.

    For create, whose rows are written whole and never read back: the ORM's
    flush of one object cost about as much CPU as the rest of the request
    (bench/README.md). Otherwise as ``unit_of_work``: committed at the end,
    rolled back on error, the write lock up front on SQLite, and
    ``StoreUnavailable`` on an outage.
    """
    with (
        _outages_unavailable(),
        writer_turn(engine, timeout=_BUSY_TIMEOUT),
        engine.connect() as connection,
        connection.begin(),
    ):
        yield connection


@contextmanager
def _outages_unavailable() -> Iterator[None]:
    """A store that cannot serve now becomes ``StoreUnavailable`` (503, logged
    throttled); any other error passes as it is."""
    try:
        yield
    except (OperationalError, DBAPIError) as exc:
        if _is_outage(exc):
            _outages.note(_first_line(exc))
            raise StoreUnavailable("the store is unavailable; try again shortly") from exc
        raise


class _OutageLog:
    """One line per outage and then one every ``every`` seconds with a count:
    during an outage every request fails, and a line each would drown the log."""

    def __init__(self, every: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._every = every
        self._clock = clock
        self._lock = threading.Lock()
        self._last = -every
        self._unsaid = 0

    def note(self, cause: str) -> None:
        with self._lock:
            now = self._clock()
            if now - self._last < self._every:
                self._unsaid += 1
                return
            also = f" (and {self._unsaid} more since the last line)" if self._unsaid else ""
            self._last, self._unsaid = now, 0
        log.warning("store unavailable: %s%s", cause, also)


_outages = _OutageLog()


# SQLite reports a query it cannot run (a pattern too complex, too many
# variables) as an OperationalError too: those are bugs or bad input, not an
# outage. These are the messages of a store that cannot serve now.
_SQLITE_OUTAGES = (
    "database is locked",
    "database table is locked",
    "disk i/o error",
    "database or disk is full",
    "unable to open database file",
    "attempt to write a readonly database",
    "database disk image is malformed",
)


def _is_outage(exc: DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError):
        return False
    if isinstance(exc.orig, sqlite3.OperationalError):
        message = str(exc.orig).lower()
        return any(outage in message for outage in _SQLITE_OUTAGES)
    return True  # PostgreSQL's OperationalError: the connection or the server


def _first_line(exc: DBAPIError) -> str:
    return f"{type(exc.orig).__name__}: {str(exc.orig).splitlines()[0] if str(exc.orig) else ''}"
