"""Queries on uptime samples; each is scoped by domain through the CVM."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Integer, case, func, insert, select
from sqlalchemy.orm import Session

from prism_backends.cvms.models import CVM
from prism_backends.statistics.models import UptimeSample


@dataclass(frozen=True, slots=True)
class Sample:
    id: int
    cvm_id: str
    timestamp: datetime
    status: bool


def _in_domain(domain_id: str, cvm_id: str, since: datetime) -> tuple[ColumnElement[bool], ...]:
    return (
        UptimeSample.cvm_id == cvm_id,
        UptimeSample.timestamp >= since,
        UptimeSample.cvm_id.in_(select(CVM.id).where(CVM.domain_id == domain_id, CVM.id == cvm_id)),
    )


def window(
    session: Session, domain_id: str, cvm_id: str, *, since: datetime, limit: int, offset: int
) -> list[Sample]:
    """Samples since ``since``, newest first."""
    rows = session.execute(
        select(UptimeSample.id, UptimeSample.cvm_id, UptimeSample.timestamp, UptimeSample.status)
        .where(*_in_domain(domain_id, cvm_id, since))
        .order_by(UptimeSample.timestamp.desc(), UptimeSample.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    return [Sample(id=row[0], cvm_id=row[1], timestamp=row[2], status=row[3]) for row in rows]


def window_counts(
    session: Session, domain_id: str, cvm_id: str, *, since: datetime
) -> tuple[int, int]:
    """(samples, samples with the agent up) since ``since``."""
    row = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(case((UptimeSample.status.is_(True), 1), else_=0)), 0).cast(
                Integer
            ),
        ).where(*_in_domain(domain_id, cvm_id, since))
    ).one()
    return int(row[0]), int(row[1])


def record(session: Session, samples: list[tuple[str, datetime, bool]]) -> None:
    """Append samples (cvm id, instant, up); the sampler calls this."""
    if samples:
        session.execute(
            insert(UptimeSample),
            [{"cvm_id": c, "timestamp": t, "status": s} for c, t, s in samples],
        )
