"""The CVM row: what the tenant asked for and what was last observed."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Index, Integer, LargeBinary, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from prism_backends.db.base import Base, UTCDateTime


class CVM(Base):
    __tablename__ = "cvms"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    domain_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    provider: Mapped[str] = mapped_column(String(32))
    cc_platform: Mapped[str] = mapped_column(String(16))
    vcpus: Mapped[int] = mapped_column(Integer)
    agent_log_level: Mapped[str] = mapped_column(String(8))
    agent_url: Mapped[str] = mapped_column(String(2048), default="")
    # The provider's own identifier of the machine; "" until known.
    cvm_id: Mapped[str] = mapped_column(String(255), default="")
    state: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str] = mapped_column(Text, default="")
    monthly_cost_cents: Mapped[int] = mapped_column(Integer)
    price_table_version: Mapped[str] = mapped_column(String(64), default="")
    attestation: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    attestation_token: Mapped[str] = mapped_column(Text, default="")
    attestation_policy: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # Where the policy came from: provider, reference, pinned (trust on first use).
    attestation_policy_source: Mapped[str] = mapped_column(String(16), default="")
    # Why the latest evidence was not accepted; "" once evidence verifies.
    attestation_error: Mapped[str] = mapped_column(Text, default="")
    attestations_verified: Mapped[int] = mapped_column(Integer, default=0)
    attestations_failed: Mapped[int] = mapped_column(Integer, default=0)
    attested_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    # Idempotent creates: the key and a digest of the request it came with.
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    request_digest: Mapped[str] = mapped_column(String(64), default="")

    # Lifecycle work: a worker owns the row while lease_expires_at is ahead.
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # When the row next needs a worker; NULL when nothing is left to do.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    first_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        # Newest-first listing of a domain's live CVMs, the hot query. The
        # filtered columns ride along so that counts are index-only on PostgreSQL.
        Index(
            "ix_cvms_domain_live_created",
            "domain_id",
            "created_at",
            "id",
            sqlite_where=text("deleted_at IS NULL"),
            postgresql_where=text("deleted_at IS NULL"),
            postgresql_include=["status", "cc_platform", "name"],
        ),
        # Deleted CVMs (status=inactive) have an index of their own.
        Index(
            "ix_cvms_domain_deleted_created",
            "domain_id",
            "created_at",
            "id",
            sqlite_where=text("deleted_at IS NOT NULL"),
            postgresql_where=text("deleted_at IS NOT NULL"),
        ),
        # Names are unique among a domain's live CVMs only.
        Index(
            "uq_cvms_domain_live_name",
            "domain_id",
            "name",
            unique=True,
            sqlite_where=text("deleted_at IS NULL"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
        Index(
            "uq_cvms_domain_idempotency_key",
            "domain_id",
            "idempotency_key",
            unique=True,
            sqlite_where=text("idempotency_key IS NOT NULL"),
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        # The workers' queue: only rows with work pending are indexed.
        Index(
            "ix_cvms_pending_work",
            "next_attempt_at",
            sqlite_where=text("next_attempt_at IS NOT NULL"),
            postgresql_where=text("next_attempt_at IS NOT NULL"),
        ),
    )


class CVMTally(Base):
    """How many of a domain's CVMs stand in each (status, platform, live)
    group, as a log of signed changes: the store's triggers add a row for every
    change to ``cvms`` (in the changing transaction), and ``cvms.tally.fold``
    folds each domain's rows into one per group from time to time.

    A list's ``total`` is then a sum over a few dozen rows, exact in the
    reader's snapshot, instead of a count over every matching CVM. Changes are
    only ever inserted, so concurrent writers never wait on a counter row.
    """

    __tablename__ = "cvm_tallies"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    domain_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    cc_platform: Mapped[str] = mapped_column(String(16))
    live: Mapped[bool] = mapped_column(Boolean)  # deleted_at IS NULL
    change: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_cvm_tallies_domain", "domain_id"),)
