"""The request path's hot statements, run on the driver's cursor.

A ``Prepared`` is a Core statement (written once, for both stores) compiled once
per dialect into what SQLAlchemy itself would send: the SQL text, the parameter
order, and each bound value's and result column's type processing. Running it
skips SQLAlchemy's per-execution machinery (an execution context, a result
object, parameter and row processing in generic Python), which cost about
100-150 µs of CPU a statement on the request path, as much as the driver's own
call: a third of a view's handler thread (bench/README.md).

Only the execution is direct. The transaction is still a SQLAlchemy
``Connection`` (pool checkout, BEGIN, COMMIT, rollback); the engine's
``before_cursor_execute`` and ``after_cursor_execute`` listeners still see every
statement (a listener that would rewrite it, ``retval=True``, is not obeyed:
the service registers none); and a driver error goes through SQLAlchemy's own
handling (wrapped as ``DBAPIError``, the connection and the pool invalidated on
a disconnect), so outages are still 503 and a unique violation is still an
``IntegrityError``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.sql.selectable import Select

Processor = Callable[[Any], Any]
Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    positional: tuple[str, ...] | None  # the parameters' order, for a '?' driver
    defaults: dict[str, Any]  # values given in the statement itself (a LIMIT 1)
    binders: tuple[tuple[str, Processor], ...]  # the parameters whose type converts them
    readers: tuple[Processor | None, ...] | None  # per result column; None: none converts

    def parameters(self, values: Mapping[str, Any]) -> dict[str, Any] | tuple[Any, ...]:
        given = {**self.defaults, **values}
        for name, convert in self.binders:
            given[name] = convert(given[name])
        if self.positional is None:
            return given
        return tuple(given[name] for name in self.positional)

    def row(self, raw: Sequence[Any]) -> Row:
        if self.readers is None:
            return tuple(raw)
        return tuple(
            value if read is None else read(value)
            for read, value in zip(self.readers, raw, strict=True)
        )


class Prepared:
    """A Core statement, compiled on first use per dialect, run on the driver.

    Statements are those of the request path: no parameter may expand at
    execution (an IN list) and an insert names its columns (``columns``) and
    reads nothing back.
    """

    def __init__(self, statement: Select[Any] | Insert, *, columns: Sequence[str] = ()) -> None:
        if isinstance(statement, Insert):
            if not columns:
                raise TypeError("an insert names the columns it is given")
            statement = statement.inline()  # nothing read back (no RETURNING of the id)
        self._statement = statement
        self._columns = list(columns) or None
        self._by_dialect: dict[str, _Compiled] = {}

    def first(self, connection: Connection, values: Mapping[str, Any]) -> Row | None:
        rows = self._run(connection, values, fetch=True)
        return rows[0] if rows else None

    def scalar(self, connection: Connection, values: Mapping[str, Any]) -> Any:
        """The first column of the first row, or None, as ``Connection.scalar``."""
        row = self.first(connection, values)
        return None if row is None else row[0]

    def all(self, connection: Connection, values: Mapping[str, Any]) -> list[Row]:
        return self._run(connection, values, fetch=True)

    def run(self, connection: Connection, values: Mapping[str, Any]) -> None:
        self._run(connection, values, fetch=False)

    def _run(self, connection: Connection, values: Mapping[str, Any], *, fetch: bool) -> list[Row]:
        if not connection.in_transaction():
            # SQLAlchemy's execution would begin one (on SQLite, the BEGIN that
            # takes the write lock); the driver's alone would not, or not visibly.
            raise TypeError("a Prepared statement runs inside a begun transaction")
        compiled = self._compiled_for(connection.dialect)
        sql, parameters = compiled.sql, compiled.parameters(values)
        dispatch = connection.dispatch
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            if dispatch.before_cursor_execute:
                for listener in dispatch.before_cursor_execute:
                    listener(connection, cursor, sql, parameters, None, False)
            cursor.execute(sql, parameters)
            if dispatch.after_cursor_execute:
                for listener in dispatch.after_cursor_execute:
                    listener(connection, cursor, sql, parameters, None, False)
            raw = cursor.fetchall() if fetch else []
        except connection.dialect.loaded_dbapi.Error as exc:
            # SQLAlchemy's own handling of a failed execution: it wraps the error,
            # invalidates the connection (and the pool's older ones) on a
            # disconnect, and raises.
            connection._handle_dbapi_exception(exc, sql, parameters, cursor, None)
        finally:
            cursor.close()
        return [compiled.row(row) for row in raw]

    def _compiled_for(self, dialect: Dialect) -> _Compiled:
        # Two threads may both compile a statement's first use: the same result,
        # and the dict keeps one of them.
        found = self._by_dialect.get(dialect.name)
        if found is None:
            found = self._by_dialect[dialect.name] = _compile(
                self._statement, self._columns, dialect
            )
        return found


def _compile(statement: ClauseElement, columns: list[str] | None, dialect: Dialect) -> _Compiled:
    compiled = statement.compile(dialect=dialect, column_keys=columns)
    assert isinstance(compiled, SQLCompiler)
    if compiled.post_compile_params or compiled.escaped_bind_names:
        raise TypeError("a Prepared statement binds each parameter as it is")
    defaults: dict[str, Any] = {}
    binders: list[tuple[str, Processor]] = []
    for parameter, name in compiled.bind_names.items():
        if not parameter.required:
            defaults[name] = parameter.effective_value
        convert = parameter.type.dialect_impl(dialect).bind_processor(dialect)
        if convert is not None:
            binders.append((name, convert))
    readers: tuple[Processor | None, ...] | None = None
    if isinstance(statement, Select):
        readers = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in statement.selected_columns
        )
        if not any(readers):
            readers = None
    positional = tuple(compiled.positiontup) if compiled.positiontup is not None else None
    return _Compiled(compiled.string, positional, defaults, tuple(binders), readers)
