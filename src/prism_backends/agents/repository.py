"""Queries about agents. Reads a tenant can make take the domain id; the
agents endpoint's own queries find a CVM by the certificate it presented,
before any domain is known, and are marked system-scoped."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from prism_backends.agents.limits import EventBounds
from prism_backends.agents.models import AgentCredential, AgentEvent, AgentSession
from prism_backends.cvms.models import CVM
from prism_backends.db.engine import upsert_insert
from prism_backends.vocabulary import Status


def add_credential(session: Session, credential: AgentCredential) -> None:
    session.add(credential)


def revoke(session: Session, domain_id: str, cvm_id: str, now: datetime) -> None:
    in_domain = select(CVM.id).where(CVM.domain_id == domain_id, CVM.id == cvm_id)
    session.execute(
        update(AgentCredential)
        .where(AgentCredential.cvm_id.in_(in_domain), AgentCredential.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )


def credential_of(session: Session, domain_id: str, cvm_id: str) -> AgentCredential | None:
    return session.scalars(
        select(AgentCredential)
        .join(CVM, CVM.id == AgentCredential.cvm_id)
        .where(CVM.domain_id == domain_id, CVM.id == cvm_id)
    ).first()


@dataclass(frozen=True, slots=True)
class Presented:
    """What the agents endpoint learns from a client certificate's serial."""

    cvm_id: str
    domain_id: str
    revoked: bool
    deleted: bool


def presented(session: Session, serial: str) -> Presented | None:
    """System-scoped: the CVM a certificate serial was issued to."""
    row = session.execute(
        select(AgentCredential.cvm_id, CVM.domain_id, AgentCredential.revoked_at, CVM.deleted_at)
        .join(CVM, CVM.id == AgentCredential.cvm_id)
        .where(AgentCredential.serial == serial)
    ).first()
    if row is None:
        return None
    return Presented(
        cvm_id=row[0], domain_id=row[1], revoked=row[2] is not None, deleted=row[3] is not None
    )


# --- sessions (system-scoped: the agents endpoint's bookkeeping) ---------------------


def open_session(
    session: Session, cvm_id: str, replica: str, now: datetime, expires_at: datetime
) -> None:
    """Record a new stream; a newer stream replaces an older one's row.

    One upsert: a delete-then-insert raced a concurrent insert of the same
    CVM's row (a renewal reopening the stream that just ended), and the
    loser's unique violation ended the new stream."""
    row = _session_row(cvm_id, replica, now, expires_at)
    statement = upsert_insert(session)(AgentSession).values(row)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["cvm_id"], set_={k: v for k, v in row.items() if k != "cvm_id"}
        )
    )


def _session_row(cvm_id: str, replica: str, now: datetime, expires_at: datetime) -> dict[str, Any]:
    """A stream's row before its agent first answered."""
    return {
        "cvm_id": cvm_id,
        "replica": replica,
        "connected_at": now,
        "last_seen_at": None,
        "expires_at": expires_at,
    }


@dataclass(frozen=True, slots=True)
class Renewal:
    """What renewing a replica's sessions found."""

    reopened: frozenset[str]  # reaped meanwhile (the store was out of reach): opened again
    elsewhere: frozenset[str]  # another replica holds a newer stream of the same agent


def renew_sessions(
    session: Session, replica: str, cvm_ids: Sequence[str], now: datetime, expires_at: datetime
) -> Renewal:
    """Keep this replica's open streams alive (their agents may be slow to answer).

    A session reaped while this replica could not reach the store is opened
    again: its agent is still connected here, and its next answer makes the
    CVM running again."""
    reopened: set[str] = set()
    elsewhere: set[str] = set()
    for chunk in _chunks(cvm_ids):
        session.execute(
            update(AgentSession)
            .where(AgentSession.cvm_id.in_(chunk), AgentSession.replica == replica)
            .values(expires_at=expires_at)
            .execution_options(synchronize_session=False)
        )
        rows = session.execute(
            select(AgentSession.cvm_id, AgentSession.replica).where(AgentSession.cvm_id.in_(chunk))
        )
        holders = {row[0]: row[1] for row in rows}
        elsewhere.update(cvm_id for cvm_id, holder in holders.items() if holder != replica)
        for cvm_id in sorted(set(chunk) - set(holders)):
            # A stream opened meanwhile (on any replica) keeps its row.
            session.execute(
                upsert_insert(session)(AgentSession)
                .values(_session_row(cvm_id, replica, now, expires_at))
                .on_conflict_do_nothing(index_elements=["cvm_id"])
            )
            reopened.add(cvm_id)
    return Renewal(frozenset(reopened), frozenset(elsewhere))


def mark_answered(session: Session, replica: str, cvm_ids: Sequence[str], now: datetime) -> None:
    """These agents answered a heartbeat: they are running."""
    for chunk in _chunks(cvm_ids):
        session.execute(
            update(AgentSession)
            .where(AgentSession.cvm_id.in_(chunk), AgentSession.replica == replica)
            .values(last_seen_at=now)
            .execution_options(synchronize_session=False)
        )
        # Only where this replica's session stands: a replica that stalled past
        # its sessions' expiry must not bring back a CVM the reaper took offline.
        ours = select(AgentSession.cvm_id).where(
            AgentSession.cvm_id.in_(chunk), AgentSession.replica == replica
        )
        session.execute(
            update(CVM)
            .where(CVM.id.in_(ours), CVM.deleted_at.is_(None), CVM.status != Status.RUNNING.value)
            .values(status=Status.RUNNING.value, updated_at=now)
            .execution_options(synchronize_session=False)
        )


def close_session(session: Session, cvm_id: str, replica: str, now: datetime) -> None:
    """The stream ended: the CVM is offline unless another stream took over."""
    session.execute(
        delete(AgentSession).where(AgentSession.cvm_id == cvm_id, AgentSession.replica == replica)
    )
    if session.get(AgentSession, cvm_id) is None:
        _mark_offline(session, [cvm_id], now)


def expire_sessions(session: Session, now: datetime, silent_since: datetime) -> list[str]:
    """Sessions whose replica stopped renewing (it crashed), or whose agent
    stopped answering: remove the former, and mark both offline."""
    crashed = list(
        session.scalars(select(AgentSession.cvm_id).where(AgentSession.expires_at < now))
    )
    for chunk in _chunks(crashed):
        session.execute(delete(AgentSession).where(AgentSession.cvm_id.in_(chunk)))
    silent = list(
        session.scalars(
            select(AgentSession.cvm_id).where(
                func.coalesce(AgentSession.last_seen_at, AgentSession.connected_at) < silent_since
            )
        )
    )
    _mark_offline(session, crashed + silent, now)
    return crashed + silent


def _mark_offline(session: Session, cvm_ids: Sequence[str], now: datetime) -> None:
    for chunk in _chunks(cvm_ids):
        session.execute(
            update(CVM)
            .where(CVM.id.in_(chunk), CVM.status == Status.RUNNING.value)
            .values(status=Status.OFFLINE.value, updated_at=now)
            .execution_options(synchronize_session=False)
        )


def deleted_among(session: Session, cvm_ids: Sequence[str]) -> set[str]:
    """System-scoped: which of these CVMs were deleted (their agents must go)."""
    gone: set[str] = set()
    for chunk in _chunks(cvm_ids):
        gone.update(
            session.scalars(select(CVM.id).where(CVM.id.in_(chunk), CVM.deleted_at.is_not(None)))
        )
    return gone


# --- events -----------------------------------------------------------------------


def add_events(session: Session, events: Sequence[dict[str, object]]) -> None:
    if events:
        session.connection().execute(insert(AgentEvent), list(events))


def events_page(
    session: Session, domain_id: str, cvm_id: str, *, limit: int, offset: int
) -> tuple[list[AgentEvent], int]:
    in_domain = select(CVM.id).where(CVM.domain_id == domain_id, CVM.id == cvm_id)
    scope = (AgentEvent.cvm_id == cvm_id, AgentEvent.cvm_id.in_(in_domain))
    rows = session.scalars(
        select(AgentEvent).where(*scope).order_by(AgentEvent.id.desc()).limit(limit).offset(offset)
    ).all()
    total = session.scalar(select(func.count()).select_from(AgentEvent).where(*scope))
    return list(rows), int(total or 0)


def prune_events(session: Session, *, received_before: datetime, bounds: EventBounds) -> None:
    """Forget events past the retention; a CVM past its bounds keeps its newest
    (``bounds.trim_count``, ``bounds.trim_size``)."""
    session.execute(delete(AgentEvent).where(AgentEvent.received_at < received_before))
    crowded = session.execute(
        select(AgentEvent.cvm_id)
        .group_by(AgentEvent.cvm_id)
        .having((func.count() > bounds.count) | (func.sum(AgentEvent.size) > bounds.size))
    ).scalars()
    for cvm_id in list(crowded):
        trim_events(session, cvm_id, keep=bounds.trim_count, keep_bytes=bounds.trim_size)


def trim_events(session: Session, cvm_id: str, *, keep: int, keep_bytes: int) -> None:
    """System-scoped: keep a CVM's newest ``keep`` events, and of those only as
    many as fit in ``keep_bytes``."""
    by_count = session.scalar(
        select(AgentEvent.id)
        .where(AgentEvent.cvm_id == cvm_id)
        .order_by(AgentEvent.id.desc())
        .offset(keep)
        .limit(1)
    )
    running = (
        select(
            AgentEvent.id,
            func.sum(AgentEvent.size).over(order_by=AgentEvent.id.desc()).label("running"),
        )
        .where(AgentEvent.cvm_id == cvm_id)
        .subquery()
    )
    by_size = session.scalar(select(func.max(running.c.id)).where(running.c.running > keep_bytes))
    cutoff = max((found for found in (by_count, by_size) if found is not None), default=None)
    if cutoff is not None:
        session.execute(
            delete(AgentEvent).where(AgentEvent.cvm_id == cvm_id, AgentEvent.id <= cutoff)
        )


def _chunks(items: Sequence[str], size: int = 1000) -> list[Sequence[str]]:
    """Sorted batches: every batched write locks rows in the same order, so the
    heartbeat's renewal and the flush's liveness update cannot deadlock."""
    ordered = sorted(items)
    return [ordered[start : start + size] for start in range(0, len(ordered), size)]


def store_token(session: Session, cvm_id: str, token: str) -> None:
    """System-scoped (the CVM is known from its certificate): keep a validated
    cloud verifier's token as the CVM's attestation token."""
    session.execute(
        update(CVM)
        .where(CVM.id == cvm_id, CVM.deleted_at.is_(None))
        .values(attestation_token=token)
        .execution_options(synchronize_session=False)
    )
