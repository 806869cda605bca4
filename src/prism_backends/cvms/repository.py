"""Every query on CVMs a request can make; each one is scoped by domain."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer

from prism_backends.cvms.models import CVM
from prism_backends.errors import Conflict
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


def get_live(session: Session, domain_id: str, cvm_id: str) -> CVM | None:
    """A CVM that has not been deleted, in this domain only."""
    if not is_cvm_id(cvm_id):
        return None
    return session.scalars(
        select(CVM).where(CVM.domain_id == domain_id, CVM.id == cvm_id, CVM.deleted_at.is_(None))
    ).first()


def get_by_idempotency_key(session: Session, domain_id: str, key: str) -> CVM | None:
    return session.scalars(
        select(CVM).where(CVM.domain_id == domain_id, CVM.idempotency_key == key)
    ).first()


def live_name_taken(session: Session, domain_id: str, name: str) -> bool:
    query = select(CVM.id).where(
        CVM.domain_id == domain_id, CVM.name == name, CVM.deleted_at.is_(None)
    )
    return session.scalars(query.limit(1)).first() is not None


def add(session: Session, cvm: CVM) -> None:
    """Insert; a concurrent insert of the same live name or key is a conflict."""
    session.add(cvm)
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict(
            "a CVM with this name or Idempotency-Key was created concurrently; retry to see it"
        ) from exc


def list_page(
    session: Session,
    domain_id: str,
    filters: ListFilters,
    *,
    limit: int,
    offset: int,
    with_evidence: bool = False,
) -> tuple[list[CVM], int]:
    """One page, newest first, and the count of every match.

    The page's ids are chosen first, from the index alone, and only those rows
    are read whole: a deep offset then skips index entries, not table rows.
    Evidence blobs are read only when asked for (``CVM.attestation`` is then
    not loaded: read it and the session loads it, one query per row).
    """
    newest_first = (CVM.created_at.desc(), CVM.id.desc())
    page_ids = (
        _filtered(select(CVM.id), domain_id, filters)
        .order_by(*newest_first)
        .limit(limit)
        .offset(offset)
        .scalar_subquery()
    )
    query = select(CVM).where(CVM.domain_id == domain_id, CVM.id.in_(page_ids))
    if not with_evidence:
        query = query.options(defer(CVM.attestation))
    page = session.scalars(query.order_by(*newest_first)).all()
    total = session.scalar(_filtered(select(func.count()).select_from(CVM), domain_id, filters))
    return list(page), int(total or 0)


_Query = TypeVar("_Query", bound=Select[Any])


def _filtered(query: _Query, domain_id: str, filters: ListFilters) -> _Query:
    query = query.where(CVM.domain_id == domain_id)
    # Deleted CVMs are only listed when asked for by status=inactive.
    if filters.status is Status.INACTIVE:
        query = query.where(CVM.deleted_at.is_not(None))
    else:
        query = query.where(CVM.deleted_at.is_(None))
        if filters.status is not None:
            query = query.where(CVM.status == filters.status.value)
    if filters.name:
        query = query.where(func.lower(CVM.name).contains(filters.name.lower(), autoescape=True))
    if filters.cc_platform is not None:
        query = query.where(CVM.cc_platform == filters.cc_platform.value)
    if filters.created_after is not None:
        query = query.where(CVM.created_at >= filters.created_after)
    return query


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
