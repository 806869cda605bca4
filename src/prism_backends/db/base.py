"""The declarative base every table model derives from."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, MetaData, TypeDecorator
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores none)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def insert_values(instance: Base, *, generated: tuple[str, ...] = ()) -> dict[str, Any]:
    """An unsaved object's every column, for one Core INSERT of it (no flush).

    Each column but the store-generated ones must have been given: a Core
    insert applies no ORM bookkeeping, and the object is what the caller
    goes on to show, so a column left to its default would show as None.
    """
    given = instance.__dict__
    values: dict[str, Any] = {}
    for column in instance.__table__.columns:
        if column.key in generated:
            continue
        if column.key not in given:
            raise TypeError(f"{type(instance).__name__}.{column.key} was not given")
        values[column.key] = given[column.key]
    return values


def utcnow() -> datetime:
    return datetime.now(UTC)
