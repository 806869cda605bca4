"""Uptime samples: one row per CVM per sampling instant."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from prism_backends.db.base import Base, UTCDateTime


class UptimeSample(Base):
    __tablename__ = "cvm_stats"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    cvm_id: Mapped[str] = mapped_column(String(36), ForeignKey("cvms.id", ondelete="CASCADE"))
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[bool] = mapped_column(Boolean)

    __table_args__ = (Index("ix_cvm_stats_cvm_timestamp", "cvm_id", "timestamp"),)
