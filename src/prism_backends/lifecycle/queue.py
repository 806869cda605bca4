"""The workers' queue over the CVM rows.

These queries are system-scoped by design: a worker serves every domain. They
address rows by primary key once claimed, and nothing here is reachable from a
request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from prism_backends.cvms.models import CVM
from prism_backends.vocabulary import State


@dataclass(frozen=True, slots=True)
class Work:
    """A snapshot of a claimed CVM: what the worker needs, detached from the session."""

    id: str
    domain_id: str
    name: str
    provider: str
    cc_platform: str
    vcpus: int
    agent_log_level: str
    agent_url: str
    provider_machine_id: str
    state: str
    attempts: int
    first_failure_at: datetime | None
    created_at: datetime | None = None


def claim(
    session: Session, *, owner: str, now: datetime, lease_seconds: float, limit: int
) -> list[Work]:
    """Take up to ``limit`` due CVMs whose lease is free or expired.

    On PostgreSQL rows locked by another worker's claim are skipped
    (FOR UPDATE SKIP LOCKED); SQLite serialises writers (BEGIN IMMEDIATE).
    """
    due = session.scalars(
        select(CVM)
        .where(
            CVM.next_attempt_at <= now,
            or_(CVM.lease_expires_at.is_(None), CVM.lease_expires_at < now),
        )
        .order_by(CVM.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    expires = now + timedelta(seconds=lease_seconds)
    claimed = []
    for cvm in due:
        cvm.lease_owner = owner
        cvm.lease_expires_at = expires
        if cvm.state == State.PENDING.value:
            cvm.state = State.PROVISIONING.value
            cvm.updated_at = now
        claimed.append(_snapshot(cvm))
    session.flush()
    return claimed


def _snapshot(cvm: CVM) -> Work:
    return Work(
        id=cvm.id,
        domain_id=cvm.domain_id,
        name=cvm.name,
        provider=cvm.provider,
        cc_platform=cvm.cc_platform,
        vcpus=cvm.vcpus,
        agent_log_level=cvm.agent_log_level,
        agent_url=cvm.agent_url,
        provider_machine_id=cvm.cvm_id,
        state=cvm.state,
        attempts=cvm.attempts,
        first_failure_at=cvm.first_failure_at,
        created_at=cvm.created_at,
    )


def renew(session: Session, *, cvm_id: str, owner: str, until: datetime) -> bool:
    """Extend our lease; False when another worker has taken the CVM over."""
    result = session.execute(
        update(CVM)
        .where(CVM.id == cvm_id, CVM.lease_owner == owner)
        .values(lease_expires_at=until)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def release(session: Session, *, cvm_ids: list[str], owner: str) -> None:
    """Give up our leases on these CVMs (their work was cut short): due again at once."""
    session.execute(
        update(CVM)
        .where(CVM.id.in_(cvm_ids), CVM.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )


def lock_if_owned(session: Session, *, cvm_id: str, owner: str) -> CVM | None:
    """The row, locked for update, only while we still hold its lease."""
    return session.scalars(
        select(CVM).where(CVM.id == cvm_id, CVM.lease_owner == owner).with_for_update()
    ).first()


@dataclass(frozen=True, slots=True)
class RowState:
    state: str
    work_pending: bool


def row_states(session: Session, cvm_ids: list[str]) -> dict[str, RowState]:
    """The lifecycle state of each of these CVMs (any domain), for the leak sweep."""
    states: dict[str, RowState] = {}
    for start in range(0, len(cvm_ids), 500):
        chunk = cvm_ids[start : start + 500]
        for cvm_id, state, next_attempt_at in session.execute(
            select(CVM.id, CVM.state, CVM.next_attempt_at).where(CVM.id.in_(chunk))
        ):
            states[cvm_id] = RowState(state=state, work_pending=next_attempt_at is not None)
    return states


def due(session: Session, now: datetime) -> tuple[int, datetime | None]:
    """How many CVMs' work is due now, and since when the oldest of it is."""
    count, oldest = session.execute(
        select(func.count(), func.min(CVM.next_attempt_at)).where(CVM.next_attempt_at <= now)
    ).one()
    return count, oldest
