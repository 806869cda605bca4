"""Queries on uptime samples. Reads are scoped by domain through the CVM; the
sampler's writes are system-wide by design (it samples every live CVM)."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    Date,
    Integer,
    LargeBinary,
    bindparam,
    case,
    delete,
    func,
    literal,
    select,
)
from sqlalchemy.orm import Session

from prism_backends.cvms.models import CVM
from prism_backends.db.engine import upsert_insert
from prism_backends.statistics.bitmap import bitmap_size, slot_index
from prism_backends.statistics.models import SampledSlot, UptimeDay
from prism_backends.vocabulary import State, Status


def days_since(session: Session, domain_id: str, cvm_id: str, first_day: date) -> list[UptimeDay]:
    """The CVM's day rows from ``first_day`` on, newest first."""
    in_domain = select(CVM.id).where(CVM.domain_id == domain_id, CVM.id == cvm_id)
    return list(
        session.scalars(
            select(UptimeDay)
            .where(
                UptimeDay.cvm_id == cvm_id,
                UptimeDay.cvm_id.in_(in_domain),
                UptimeDay.day >= first_day,
            )
            .order_by(UptimeDay.day.desc(), UptimeDay.interval_seconds)
        )
    )


def claim_slot(session: Session, slot_at: datetime, owner: str, now: datetime) -> bool:
    """True for the one process that gets to sample this instant."""
    values = {"slot_at": slot_at, "sampled_by": owner, "sampled_at": now}
    upsert = upsert_insert(session)
    # RETURNING, not rowcount: drivers disagree on rowcount after DO NOTHING.
    claimed = session.execute(
        upsert(SampledSlot).values(**values).on_conflict_do_nothing().returning(SampledSlot.slot_at)
    ).first()
    return claimed is not None


def sample_every_live_cvm(session: Session, slot_at: datetime, interval_seconds: int) -> None:
    """Set one slot's bit for every provisioned live CVM, up if its agent is
    running: one statement, the store doing the work (no row reaches Python).

    ``set_bit``/``get_bit`` are PostgreSQL's on bytea (bit ``n`` is bit
    ``n % 8``, least significant first, of byte ``n // 8``: the layout of
    ``bitmap.with_sample``); on SQLite the engine provides the same functions.
    """
    day, index = slot_index(slot_at, interval_seconds)
    empty = bindparam("empty", bytes(bitmap_size(interval_seconds)), type_=LargeBinary)
    up_bit = case((CVM.status == Status.RUNNING.value, 1), else_=0)
    source = select(
        CVM.id,
        literal(day, Date),
        literal(interval_seconds, Integer),
        func.set_bit(empty, index, 1),
        func.set_bit(empty, index, up_bit),
    ).where(CVM.deleted_at.is_(None), CVM.state == State.PROVISIONED.value)
    upsert = upsert_insert(session)
    statement = upsert(UptimeDay).from_select(
        ["cvm_id", "day", "interval_seconds", "seen", "up"], source
    )
    statement = statement.on_conflict_do_update(
        index_elements=["cvm_id", "day", "interval_seconds"],
        set_={
            "seen": func.set_bit(UptimeDay.seen, index, 1),
            "up": func.set_bit(UptimeDay.up, index, func.get_bit(statement.excluded.up, index)),
        },
    )
    session.execute(statement)


def prune(session: Session, *, before_day: date, slots_before: datetime) -> None:
    """Forget samples and slot claims past the retention."""
    session.execute(delete(UptimeDay).where(UptimeDay.day < before_day))
    session.execute(delete(SampledSlot).where(SampledSlot.slot_at < slots_before))


def newest_slot(session: Session) -> tuple[datetime, datetime] | None:
    """The newest sampled instant and when it was sampled (none before the first)."""
    row = session.execute(
        select(SampledSlot.slot_at, SampledSlot.sampled_at)
        .order_by(SampledSlot.slot_at.desc())
        .limit(1)
    ).first()
    return (row[0], row[1]) if row is not None else None
