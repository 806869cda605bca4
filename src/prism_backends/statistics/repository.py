"""Queries on uptime samples. Reads are scoped by domain through the CVM; the
sampler's writes are system-wide by design (it samples every live CVM)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime

from sqlalchemy import (
    Date,
    Integer,
    LargeBinary,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from prism_backends.cvms.models import CVM
from prism_backends.statistics.bitmap import bitmap_size, slot_index, with_sample
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
    dialect = session.get_bind().dialect.name
    upsert = postgresql.insert if dialect == "postgresql" else sqlite.insert
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
    dialect = session.get_bind().dialect.name
    upsert = postgresql.insert if dialect == "postgresql" else sqlite.insert
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


def record_slot(
    session: Session, slot_at: datetime, interval_seconds: int, observations: Mapping[str, bool]
) -> None:
    """Set one slot's bit for each of these CVMs (True: its agent was up): a
    history as given, for imports and tests; the sampler samples the store
    itself (``sample_every_live_cvm``)."""
    if not observations:
        return
    day, index = slot_index(slot_at, interval_seconds)
    empty = bytes(bitmap_size(interval_seconds))
    cvm_ids = list(observations)
    existing: dict[str, UptimeDay] = {}
    for start in range(0, len(cvm_ids), 1000):
        chunk = cvm_ids[start : start + 1000]
        for row in session.scalars(
            select(UptimeDay)
            .where(
                UptimeDay.cvm_id.in_(chunk),
                UptimeDay.day == day,
                UptimeDay.interval_seconds == interval_seconds,
            )
            .with_for_update()
        ):
            existing[row.cvm_id] = row
    updates: list[dict[str, object]] = []
    inserts: list[dict[str, object]] = []
    for cvm_id, is_up in observations.items():
        found = existing.get(cvm_id)
        seen, up = with_sample(
            found.seen if found else empty, found.up if found else empty, index, is_up
        )
        if found is None:
            inserts.append(
                {
                    "cvm_id": cvm_id,
                    "day": day,
                    "interval_seconds": interval_seconds,
                    "seen": seen,
                    "up": up,
                }
            )
        else:
            updates.append({"row_id": found.id, "seen": seen, "up": up})
    table = UptimeDay.__table__
    if inserts:
        session.connection().execute(insert(UptimeDay), inserts)
    if updates:
        statement = (
            update(UptimeDay)
            .where(table.c.id == bindparam("row_id"))
            .values(seen=bindparam("seen"), up=bindparam("up"))
        )
        session.connection().execute(statement, updates)


def prune(session: Session, *, before_day: date, slots_before: datetime) -> None:
    """Forget samples and slot claims past the retention."""
    session.execute(delete(UptimeDay).where(UptimeDay.day < before_day))
    session.execute(delete(SampledSlot).where(SampledSlot.slot_at < slots_before))
