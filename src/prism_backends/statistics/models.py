"""Uptime samples, stored a day per row as two bitmaps.

At the default 5-minute interval, 10,000 CVMs kept 90 days are 259 million
samples; as one row per CVM per day they are 900,000 rows of 2 x 36 bytes,
and a 90-day statistics query reads 90 rows. Bit ``i`` of a day is the slot
starting ``i * interval_seconds`` after midnight UTC: ``seen`` says a sample
was taken, ``up`` that the agent was connected and answering.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Date, ForeignKey, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from prism_backends.db.base import Base, UTCDateTime


class UptimeDay(Base):
    __tablename__ = "cvm_uptime_days"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    cvm_id: Mapped[str] = mapped_column(String(36), ForeignKey("cvms.id", ondelete="CASCADE"))
    day: Mapped[date] = mapped_column(Date)
    interval_seconds: Mapped[int] = mapped_column(Integer)
    seen: Mapped[bytes] = mapped_column(LargeBinary)
    up: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (UniqueConstraint("cvm_id", "day", "interval_seconds"),)


class SampledSlot(Base):
    """Which sampling instants have been taken: the first process to insert a
    slot samples it, so several processes never sample the same instant twice."""

    __tablename__ = "sampled_slots"

    slot_at: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    sampled_by: Mapped[str] = mapped_column(String(64))
    sampled_at: Mapped[datetime] = mapped_column(UTCDateTime())
