"""Rows of the service's own tables, written by COPY, for the benchmarks that fill a store.

The columns a benchmark does not give take the model's own Python-side default (what an
insert through the service would store), or NULL; so a column added to a model with a
default does not break the fill.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import Table
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from prism_backends.db.base import Base


def copy_model_rows(
    conn: psycopg.Connection[Any],
    model: type[Base],
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
) -> int:
    """COPY ``rows`` (values of ``columns``, in that order) into ``model``'s table; every other
    column of the table in the database gets the model's scalar default, or the
    database's own (a sequence), or NULL.
    The number of rows written."""
    table = model.__table__
    assert isinstance(table, Table)
    present: dict[str, bool] = {  # column name: whether the database has a default for it
        name: database_default is not None
        for name, database_default in conn.execute(
            "SELECT column_name, column_default FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = %s",
            (table.name,),
        )
    }
    missing = [name for name in columns if name not in present]
    if missing:
        raise ValueError(f"{table.name} has no column {', '.join(missing)}")
    defaults: list[tuple[str, Any]] = []
    for column in table.columns:
        if column.name in columns or column.name not in present:
            continue
        if isinstance(column.default, ScalarElementColumnDefault):
            defaults.append((column.name, column.default.arg))
        elif not column.nullable and not present[column.name]:
            raise ValueError(f"no value for {table.name}.{column.name}, which has no default")
    names = [*columns, *(name for name, _ in defaults)]
    tail = tuple(value for _, value in defaults)
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table.name), sql.SQL(", ").join(sql.Identifier(n) for n in names)
    )
    written = 0
    with conn.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row((*row, *tail))
            written += 1
    return written
