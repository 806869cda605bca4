"""Plain functions that put rows in a store, for tests that need history."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from prism_backends.cvms.models import CVM
from prism_backends.db.base import utcnow
from prism_backends.db.engine import unit_of_work
from prism_backends.statistics.bitmap import bitmap_size, slot_index, slot_start, with_sample
from prism_backends.statistics.models import UptimeDay
from prism_backends.vocabulary import State, Status


def insert_cvm(
    sessions: sessionmaker[Session],
    *,
    domain_id: str = "dom-1",
    name: str | None = None,
    status: Status = Status.RUNNING,
    state: State = State.PROVISIONED,
    platform: str = "sev-snp",
    provider: str = "external",
    created_at: datetime | None = None,
    deleted: bool = False,
    policy: bytes | None = None,
) -> str:
    cvm_id = str(uuid.uuid4())
    created = created_at or utcnow()
    with unit_of_work(sessions) as session:
        session.add(
            CVM(
                id=cvm_id,
                domain_id=domain_id,
                name=name or f"cvm-{cvm_id[:8]}",
                provider=provider,
                cc_platform=platform,
                vcpus=2,
                agent_log_level="info",
                agent_url="",
                cvm_id=cvm_id,
                state=(State.DELETED if deleted else state).value,
                status=(Status.INACTIVE if deleted else status).value,
                error="",
                monthly_cost_cents=0,
                price_table_version="test",
                attestation=None,
                attestation_token="",
                attestation_policy=policy,
                created_at=created,
                updated_at=created,
                deleted_at=created + timedelta(minutes=1) if deleted else None,
                request_digest="",
                attempts=0,
            )
        )
    return cvm_id


def insert_samples(
    sessions: sessionmaker[Session],
    cvm_id: str,
    samples: list[tuple[datetime, bool]],
    interval_seconds: int = 300,
) -> None:
    """Record a history of samples, each in the slot its instant falls in, in
    the day bitmaps the sampler writes."""
    empty = bytes(bitmap_size(interval_seconds))
    with unit_of_work(sessions) as session:
        for moment, is_up in samples:
            day, index = slot_index(slot_start(moment, interval_seconds), interval_seconds)
            row = session.scalars(
                select(UptimeDay).where(
                    UptimeDay.cvm_id == cvm_id,
                    UptimeDay.day == day,
                    UptimeDay.interval_seconds == interval_seconds,
                )
            ).first()
            if row is None:
                row = UptimeDay(
                    cvm_id=cvm_id, day=day, interval_seconds=interval_seconds, seen=empty, up=empty
                )
                session.add(row)
            row.seen, row.up = with_sample(row.seen, row.up, index, is_up)
            session.flush()


def pending_cvm(sessions: sessionmaker[Session], provider: str = "aws") -> str:
    """A CVM the lifecycle workers may claim now, with no machine yet."""
    cvm_id = insert_cvm(sessions, provider=provider, state=State.PENDING, status=Status.STARTING)
    with unit_of_work(sessions) as session:
        session.execute(
            update(CVM).where(CVM.id == cvm_id).values(next_attempt_at=utcnow(), cvm_id="")
        )
    return cvm_id


def cvm_row(sessions: sessionmaker[Session], cvm_id: str) -> CVM:
    """The CVM's row as it is now, detached from its session."""
    with unit_of_work(sessions) as session:
        row = session.scalars(select(CVM).where(CVM.id == cvm_id)).one()
        session.expunge(row)
        return row
