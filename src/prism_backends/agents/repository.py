"""Queries about agents. Reads a tenant can make take the domain id; the
agents endpoint's own queries find a CVM by the certificate it presented,
before any domain is known, and are marked system-scoped."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session, aliased

from prism_backends.agents.limits import EventBounds
from prism_backends.agents.models import AgentCredential, AgentEvent, AgentSession
from prism_backends.cvms.models import CVM
from prism_backends.cvms.repository import is_cvm_id
from prism_backends.db.base import insert_values
from prism_backends.db.driver import Prepared
from prism_backends.db.engine import one_of, upsert_insert
from prism_backends.vocabulary import Status

_STORE_GENERATED = ("id",)
_INSERT_CREDENTIAL = Prepared(
    insert(AgentCredential),
    columns=[
        column.key
        for column in AgentCredential.__table__.columns
        if column.key not in _STORE_GENERATED
    ],
)


def insert_credential(connection: Connection, credential: AgentCredential) -> None:
    """The credential as one statement; its id is the store's, and not read back."""
    _INSERT_CREDENTIAL.run(connection, insert_values(credential, generated=_STORE_GENERATED))


def revoke(session: Session, domain_id: str, cvm_id: str, now: datetime) -> None:
    """Revoke every certificate of the CVM still standing (it is being deleted)."""
    in_domain = select(CVM.id).where(CVM.domain_id == domain_id, CVM.id == cvm_id)
    session.execute(
        update(AgentCredential)
        .where(AgentCredential.cvm_id.in_(in_domain), AgentCredential.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )


def newest_valid(
    session: Session, domain_id: str, cvm_id: str, now: datetime
) -> AgentCredential | None:
    """The CVM's newest certificate that is neither revoked nor expired: the one
    handed out to its agent."""
    return session.scalars(
        select(AgentCredential)
        .join(CVM, CVM.id == AgentCredential.cvm_id)
        .where(
            CVM.domain_id == domain_id,
            CVM.id == cvm_id,
            AgentCredential.revoked_at.is_(None),
            AgentCredential.not_after > now,
        )
        .order_by(AgentCredential.id.desc())
        .limit(1)
    ).first()


def credentials_of(session: Session, domain_id: str, cvm_id: str) -> list[AgentCredential]:
    """Every certificate the CVM was given, newest first."""
    return list(
        session.scalars(
            select(AgentCredential)
            .join(CVM, CVM.id == AgentCredential.cvm_id)
            .where(CVM.domain_id == domain_id, CVM.id == cvm_id)
            .order_by(AgentCredential.id.desc())
        )
    )


def credential_by_serial(
    session: Session, domain_id: str, cvm_id: str, serial: str
) -> AgentCredential | None:
    return session.scalars(
        select(AgentCredential)
        .join(CVM, CVM.id == AgentCredential.cvm_id)
        .where(CVM.domain_id == domain_id, CVM.id == cvm_id, AgentCredential.serial == serial)
    ).first()


def cvm_deleted(session: Session, domain_id: str, cvm_id: str) -> bool | None:
    """Whether the CVM of this domain was deleted; None when there is no such CVM."""
    if not is_cvm_id(cvm_id):
        return None
    row = session.execute(
        select(CVM.deleted_at).where(CVM.domain_id == domain_id, CVM.id == cvm_id)
    ).first()
    return None if row is None else row[0] is not None


@dataclass(frozen=True, slots=True)
class Presented:
    """What the agents endpoint learns from a client certificate's serial."""

    cvm_id: str
    domain_id: str
    revoked: bool
    deleted: bool


# A connect's statements, built once: a connect runs them in one transaction,
# and building an ORM statement each time cost more CPU than running it.
_CREDENTIALS = cast(Table, AgentCredential.__table__)
_CVMS = cast(Table, CVM.__table__)
_PRESENTED = (
    select(_CREDENTIALS.c.cvm_id, _CVMS.c.domain_id, _CREDENTIALS.c.revoked_at, _CVMS.c.deleted_at)
    .join(_CVMS, _CVMS.c.id == _CREDENTIALS.c.cvm_id)
    .where(_CREDENTIALS.c.serial == bindparam("serial"))
)
_FIRST_PRESENTED = (
    _CREDENTIALS.update()
    .where(
        _CREDENTIALS.c.cvm_id == bindparam("of_cvm"),
        _CREDENTIALS.c.serial == bindparam("of_serial"),
        _CREDENTIALS.c.presented_at.is_(None),
    )
    .values(presented_at=bindparam("now"))
)


def presented(session: Session, serial: str) -> Presented | None:
    """System-scoped: the CVM a certificate serial was issued to."""
    row = session.connection().execute(_PRESENTED, {"serial": serial}).first()
    if row is None:
        return None
    return Presented(
        cvm_id=row[0], domain_id=row[1], revoked=row[2] is not None, deleted=row[3] is not None
    )


def note_presented(session: Session, cvm_id: str, serial: str, now: datetime) -> list[str]:
    """System-scoped: the CVM's agent connected with this certificate. The first
    time it does, the CVM's older certificates still standing are revoked (the
    agent has moved on to this one); their serials are returned."""
    first = session.connection().execute(
        _FIRST_PRESENTED, {"of_cvm": cvm_id, "of_serial": serial, "now": now}
    )
    if not first.rowcount:
        return []
    this_one = select(AgentCredential.id).where(AgentCredential.serial == serial).scalar_subquery()
    older = (
        AgentCredential.cvm_id == cvm_id,
        AgentCredential.id < this_one,
        AgentCredential.revoked_at.is_(None),
    )
    serials = sorted(session.scalars(select(AgentCredential.serial).where(*older)))
    if serials:
        session.execute(
            update(AgentCredential)
            .where(AgentCredential.cvm_id == cvm_id, AgentCredential.serial.in_(serials))
            .values(revoked_at=now)
            .execution_options(synchronize_session=False)
        )
    return serials


@dataclass(frozen=True, slots=True)
class Expiring:
    cvm_id: str
    serial: str
    not_after: datetime


def claim_expiry_warnings(session: Session, now: datetime, warn_from: datetime) -> list[Expiring]:
    """System-scoped housekeeping: the certificates that are their live CVM's
    newest valid one and expire before ``warn_from``, not warned about yet;
    they are marked warned in the same statement, so each is claimed once
    (a concurrent claim waits on the row and then finds it marked)."""
    candidate, newer = aliased(AgentCredential), aliased(AgentCredential)
    superseded = (
        select(newer.id)
        .where(
            newer.cvm_id == candidate.cvm_id,
            newer.id > candidate.id,
            newer.revoked_at.is_(None),
            newer.not_after > now,
        )
        .exists()
    )
    due = (
        select(candidate.id)
        .join(CVM, CVM.id == candidate.cvm_id)
        .where(
            candidate.revoked_at.is_(None),
            candidate.expiry_warned_at.is_(None),
            candidate.not_after <= warn_from,
            candidate.not_after > now,
            CVM.deleted_at.is_(None),
            ~superseded,
        )
    )
    claimed = session.execute(
        update(AgentCredential)
        .where(AgentCredential.id.in_(due), AgentCredential.expiry_warned_at.is_(None))
        .values(expiry_warned_at=now)
        .returning(AgentCredential.cvm_id, AgentCredential.serial, AgentCredential.not_after)
        .execution_options(synchronize_session=False)
    )
    found = [Expiring(cvm_id=row[0], serial=row[1], not_after=row[2]) for row in claimed]
    return sorted(found, key=lambda expiring: (expiring.cvm_id, expiring.serial))


# --- sessions (system-scoped: the agents endpoint's bookkeeping) ---------------------


def open_session(
    session: Session, cvm_id: str, replica: str, now: datetime, expires_at: datetime
) -> None:
    """Record a new stream; a newer stream replaces an older one's row.

    One upsert: a delete-then-insert raced a concurrent insert of the same
    CVM's row (a renewal reopening the stream that just ended), and the
    loser's unique violation ended the new stream."""
    statement = _open_session_statement(upsert_insert(session))
    session.connection().execute(statement, _session_row(cvm_id, replica, now, expires_at))


@functools.cache
def _open_session_statement(insert_of: Any) -> Any:
    """The upsert of a stream's row, built once per store dialect's insert."""
    statement = insert_of(cast(Table, AgentSession.__table__))
    columns = ("replica", "connected_at", "last_seen_at", "expires_at")
    return statement.on_conflict_do_update(
        index_elements=["cvm_id"], set_={name: statement.excluded[name] for name in columns}
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
            .where(one_of(session, AgentSession.cvm_id, chunk), AgentSession.replica == replica)
            .values(expires_at=expires_at)
            .execution_options(synchronize_session=False)
        )
        rows = session.execute(
            select(AgentSession.cvm_id, AgentSession.replica).where(
                one_of(session, AgentSession.cvm_id, chunk)
            )
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
            .where(one_of(session, AgentSession.cvm_id, chunk), AgentSession.replica == replica)
            .values(last_seen_at=now)
            .execution_options(synchronize_session=False)
        )
        # Only where this replica's session stands: a replica that stalled past
        # its sessions' expiry must not bring back a CVM the reaper took offline.
        ours = select(AgentSession.cvm_id).where(
            one_of(session, AgentSession.cvm_id, chunk), AgentSession.replica == replica
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
        session.execute(delete(AgentSession).where(one_of(session, AgentSession.cvm_id, chunk)))
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
            .where(one_of(session, CVM.id, chunk), CVM.status == Status.RUNNING.value)
            .values(status=Status.OFFLINE.value, updated_at=now)
            .execution_options(synchronize_session=False)
        )


STREAM_ENDS = {
    "deleted": "the CVM was deleted",
    "revoked": "this certificate has been revoked",
    "expired": "this certificate has expired",
}


def ended_streams(session: Session, serials: Mapping[str, str], now: datetime) -> dict[str, str]:
    """System-scoped: of these streams (CVM id -> the serial it presented), those
    whose agent must go, with the reason (a ``STREAM_ENDS`` value): its CVM was
    deleted, or its certificate was revoked or ran out."""
    by_serial = {serial: cvm_id for cvm_id, serial in serials.items()}
    ended: dict[str, str] = {}
    for chunk in _chunks(list(by_serial)):
        rows = session.execute(
            select(
                AgentCredential.serial,
                CVM.deleted_at,
                AgentCredential.revoked_at,
                AgentCredential.not_after,
            )
            .join(CVM, CVM.id == AgentCredential.cvm_id)
            .where(one_of(session, AgentCredential.serial, chunk))
        )
        seen = set()
        for serial, deleted_at, revoked_at, not_after in rows:
            seen.add(serial)
            if deleted_at is not None:
                ended[by_serial[serial]] = STREAM_ENDS["deleted"]
            elif revoked_at is not None:
                ended[by_serial[serial]] = STREAM_ENDS["revoked"]
            elif not_after <= now:
                ended[by_serial[serial]] = STREAM_ENDS["expired"]
        for serial in set(chunk) - seen:  # its CVM's rows are gone altogether
            ended[by_serial[serial]] = STREAM_ENDS["deleted"]
    return ended


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


def open_sessions_by_replica(session: Session, now: datetime) -> list[tuple[str, int]]:
    """System-scoped, for the metrics: unexpired agent sessions per agents replica."""
    rows = session.execute(
        select(AgentSession.replica, func.count())
        .where(AgentSession.expires_at > now)
        .group_by(AgentSession.replica)
    )
    return [(replica, count) for replica, count in rows]
