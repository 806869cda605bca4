"""Every query on CVMs a request can make; each one is scoped by domain. The one
system-wide read, ``deployment_counts``, serves the operators' metrics only."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Select, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from prism_backends.cvms import tally
from prism_backends.cvms.models import CVM
from prism_backends.cvms.schemas import ShownCVM
from prism_backends.db.base import UTCDateTime, insert_values
from prism_backends.db.driver import Prepared
from prism_backends.errors import CreatedConcurrently
from prism_backends.vocabulary import Platform, State, Status


@dataclass(frozen=True, slots=True)
class ListFilters:
    name: str | None = None
    status: Status | None = None
    cc_platform: Platform | None = None
    created_after: datetime | None = None


# Our ids are UUIDs: anything else names no CVM and never reaches a query
# (PostgreSQL refuses some strings outright, such as those with NUL).
_CVM_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def is_cvm_id(value: str) -> bool:
    return _CVM_ID.fullmatch(value) is not None


# The view and list routes read the columns of a ShownCVM alone, as plain rows
# rather than ORM objects: nothing is tracked, and the workers' and
# attestation's columns stay unread.
_CVMS = CVM.__table__
SHOWN_COLUMNS = ShownCVM._fields[:-1]
_SHOWN = tuple(_CVMS.c[name] for name in SHOWN_COLUMNS)
_NEWEST_FIRST = (_CVMS.c.created_at.desc(), _CVMS.c.id.desc())


# The hot statements are built once, with named parameters, and run on the
# driver with values (db/driver.py): building a statement costs more CPU than
# executing it (about 0.2 ms a view), and SQLAlchemy's execution of a built one
# about as much as the driver's.
_SHOWN_LIVE = Prepared(
    select(*_SHOWN, _CVMS.c.attestation).where(
        _CVMS.c.domain_id == bindparam("domain_id"),
        _CVMS.c.id == bindparam("cvm_id"),
        _CVMS.c.deleted_at.is_(None),
    )
)


def shown_live(connection: Connection, domain_id: str, cvm_id: str) -> ShownCVM | None:
    """What the view route shows of a live CVM of this domain, evidence included."""
    if not is_cvm_id(cvm_id):
        return None
    row = _SHOWN_LIVE.first(connection, {"domain_id": domain_id, "cvm_id": cvm_id})
    return None if row is None else ShownCVM._make(row)


def get_live(session: Session, domain_id: str, cvm_id: str) -> CVM | None:
    """A CVM that has not been deleted, in this domain only."""
    if not is_cvm_id(cvm_id):
        return None
    return session.scalars(
        select(CVM).where(CVM.domain_id == domain_id, CVM.id == cvm_id, CVM.deleted_at.is_(None))
    ).first()


_BY_IDEMPOTENCY_KEY = Prepared(
    select(*_SHOWN, _CVMS.c.attestation, _CVMS.c.request_digest).where(
        _CVMS.c.domain_id == bindparam("domain_id"),
        _CVMS.c.idempotency_key == bindparam("key"),
    )
)


def shown_by_idempotency_key(
    connection: Connection, domain_id: str, key: str
) -> tuple[ShownCVM, str] | None:
    """The CVM a create with this key made (deleted or not), as the view shows
    it, and the digest of the request that made it."""
    row = _BY_IDEMPOTENCY_KEY.first(connection, {"domain_id": domain_id, "key": key})
    if row is None:
        return None
    *shown, digest = row
    return ShownCVM(*shown), digest


_LIVE_NAME = Prepared(
    select(_CVMS.c.id)
    .where(
        _CVMS.c.domain_id == bindparam("domain_id"),
        _CVMS.c.name == bindparam("name"),
        _CVMS.c.deleted_at.is_(None),
    )
    .limit(1)
)


def live_name_taken(connection: Connection, domain_id: str, name: str) -> bool:
    return _LIVE_NAME.first(connection, {"domain_id": domain_id, "name": name}) is not None


_INSERT = Prepared(insert(CVM), columns=[column.key for column in _CVMS.columns])


def insert_new(connection: Connection, cvm: CVM) -> None:
    """Insert a new CVM, every column given, as one Core statement; a
    concurrent insert of the same live name or key is a conflict."""
    try:
        _INSERT.run(connection, insert_values(cvm))
    except IntegrityError as exc:
        raise CreatedConcurrently(
            "a CVM with this name or Idempotency-Key was created concurrently; retry to see it"
        ) from exc


def list_page(
    connection: Connection,
    domain_id: str,
    filters: ListFilters,
    *,
    limit: int,
    offset: int,
    with_evidence: bool = False,
) -> tuple[list[ShownCVM], int]:
    """One page, newest first, and the count of every match.

    The page's ids are chosen first, from the index alone, and only those rows
    are read: a deep offset then skips index entries, not table rows. Evidence
    blobs are read only when asked for.
    """
    shape = _Shape.of(filters)
    values = {**shape.values(domain_id, filters), "limit": limit, "offset": offset}
    page = _page_statement(shape, with_evidence).all(connection, values)
    return [ShownCVM(*row) for row in page], count_matching(connection, domain_id, filters)


def count_matching(connection: Connection, domain_id: str, filters: ListFilters) -> int:
    """Every match: from the domain's tally unless the filters reach past what
    it counts (a name or an age), where the store counts the rows."""
    if not filters.name and filters.created_after is None:
        return tally.count(
            connection, domain_id, status=filters.status, cc_platform=filters.cc_platform
        )
    shape = _Shape.of(filters)
    return int(_count_statement(shape).scalar(connection, shape.values(domain_id, filters)) or 0)


@dataclass(frozen=True, slots=True)
class _Shape:
    """Which filters a list has. Its statements differ by these alone, so each
    is built once per shape and then executed with the filters' values."""

    deleted: bool  # status=inactive: deleted CVMs, of any status
    status: bool
    name: bool
    cc_platform: bool
    created_after: bool

    @classmethod
    def of(cls, filters: ListFilters) -> _Shape:
        deleted = filters.status is Status.INACTIVE
        return cls(
            deleted=deleted,
            status=filters.status is not None and not deleted,
            name=bool(filters.name),
            cc_platform=filters.cc_platform is not None,
            created_after=filters.created_after is not None,
        )

    def values(self, domain_id: str, filters: ListFilters) -> dict[str, Any]:
        values: dict[str, Any] = {"domain_id": domain_id}
        if self.status and filters.status is not None:
            values["status"] = filters.status.value
        if self.name and filters.name:
            values["name"] = _like_escaped(filters.name.lower())
        if filters.cc_platform is not None:
            values["cc_platform"] = filters.cc_platform.value
        if filters.created_after is not None:
            values["created_after"] = filters.created_after
        return values


_LIKE_ESCAPE = "/"


def _like_escaped(text: str) -> str:
    """``text`` matched literally inside a LIKE pattern (``%`` and ``_`` are not wildcards)."""
    for special in (_LIKE_ESCAPE, "%", "_"):
        text = text.replace(special, _LIKE_ESCAPE + special)
    return text


_Query = TypeVar("_Query", bound=Select[Any])


def _filtered(query: _Query, shape: _Shape) -> _Query:
    cvms = _CVMS.c
    query = query.where(cvms.domain_id == bindparam("domain_id"))
    # Deleted CVMs are only listed when asked for by status=inactive.
    if shape.deleted:
        query = query.where(cvms.deleted_at.is_not(None))
    else:
        query = query.where(cvms.deleted_at.is_(None))
    if shape.status:
        query = query.where(cvms.status == bindparam("status"))
    if shape.name:
        query = query.where(func.lower(cvms.name).contains(bindparam("name"), escape=_LIKE_ESCAPE))
    if shape.cc_platform:
        query = query.where(cvms.cc_platform == bindparam("cc_platform"))
    if shape.created_after:
        query = query.where(cvms.created_at >= bindparam("created_after", type_=UTCDateTime()))
    return query


@functools.cache
def _page_statement(shape: _Shape, with_evidence: bool) -> Prepared:
    page_ids = (
        _filtered(select(_CVMS.c.id), shape)
        .order_by(*_NEWEST_FIRST)
        .limit(bindparam("limit"))
        .offset(bindparam("offset"))
        .scalar_subquery()
    )
    columns = (*_SHOWN, _CVMS.c.attestation) if with_evidence else _SHOWN
    query = select(*columns).where(
        _CVMS.c.domain_id == bindparam("domain_id"), _CVMS.c.id.in_(page_ids)
    )
    return Prepared(query.order_by(*_NEWEST_FIRST))


@functools.cache
def _count_statement(shape: _Shape) -> Prepared:
    return Prepared(_filtered(select(func.count()).select_from(_CVMS), shape))


def mark_deleted(session: Session, domain_id: str, cvm_id: str, now: datetime) -> bool:
    """Record the intent to delete; teardown is the workers' job. False if not live."""
    if not is_cvm_id(cvm_id):
        return False
    result = session.execute(
        update(CVM)
        .where(CVM.domain_id == domain_id, CVM.id == cvm_id, CVM.deleted_at.is_(None))
        .values(
            deleted_at=now,
            updated_at=now,
            state=State.DELETING.value,
            status=Status.INACTIVE.value,
            next_attempt_at=now,
            attempts=0,
            first_failure_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def deployment_counts(session: Session) -> list[tuple[str, str, str, int]]:
    """System-scoped, for the metrics: CVMs not deleted, by provider, state and status."""
    rows = session.execute(
        select(CVM.provider, CVM.state, CVM.status, func.count())
        .where(CVM.state != State.DELETED.value)
        .group_by(CVM.provider, CVM.state, CVM.status)
    )
    return [(provider, state, status, count) for provider, state, status, count in rows]
