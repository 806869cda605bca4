"""What the service keeps about each CVM's agent: its credentials, its live
session (liveness with expiry, shared by every agents endpoint replica), and
what it reported (logs, events, results)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from prism_backends.db.base import Base, UTCDateTime

_BIGINT_ID = BigInteger().with_variant(Integer, "sqlite")


class AgentCredential(Base):
    """One client certificate of a CVM's agent. A CVM holds several over time:
    the newest valid one is handed out; an older one stays valid until the
    agent connects with a newer one (which revokes it) or until it expires."""

    __tablename__ = "agent_credentials"

    # Issue order: "newer" and "older" below mean a larger or smaller id.
    id: Mapped[int] = mapped_column(_BIGINT_ID, primary_key=True, autoincrement=True)
    cvm_id: Mapped[str] = mapped_column(String(36), ForeignKey("cvms.id", ondelete="CASCADE"))
    serial: Mapped[str] = mapped_column(String(40), unique=True)  # hex, as in the certificate
    cert_pem: Mapped[str] = mapped_column(Text)
    sealed_key: Mapped[bytes] = mapped_column(LargeBinary)  # see agents/sealing.py
    not_before: Mapped[datetime] = mapped_column(UTCDateTime())
    not_after: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # When the agent first connected with it; NULL while it is pending.
    presented_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # When its expiry warning event was written: one per certificate, whichever
    # process's housekeeping gets there first.
    expiry_warned_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        Index("ix_agent_credentials_cvm_id_id", "cvm_id", "id"),
        # The housekeeping's search for certificates to warn about.
        Index(
            "ix_agent_credentials_not_after",
            "not_after",
            sqlite_where=text("revoked_at IS NULL AND expiry_warned_at IS NULL"),
            postgresql_where=text("revoked_at IS NULL AND expiry_warned_at IS NULL"),
        ),
    )


class AgentSession(Base):
    """One row while an agent's stream is open; it expires unless renewed."""

    __tablename__ = "agent_sessions"

    cvm_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("cvms.id", ondelete="CASCADE"), primary_key=True
    )
    replica: Mapped[str] = mapped_column(String(64))
    connected_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # When the agent last answered a heartbeat; NULL until it first does.
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_agent_sessions_expires_at", "expires_at"),)


class AgentEvent(Base):
    """A log line, event, result or connection change reported for a CVM."""

    __tablename__ = "agent_events"

    id: Mapped[int] = mapped_column(_BIGINT_ID, primary_key=True, autoincrement=True)
    cvm_id: Mapped[str] = mapped_column(String(36), ForeignKey("cvms.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    level: Mapped[str] = mapped_column(String(16), default="")
    message: Mapped[str] = mapped_column(Text, default="")
    computation_id: Mapped[str] = mapped_column(String(255), default="")
    details: Mapped[str] = mapped_column(Text, default="")  # JSON
    # Bytes of message and details (UTF-8): what the per-CVM bound counts.
    size: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (
        Index("ix_agent_events_cvm_id_id", "cvm_id", "id"),
        Index("ix_agent_events_received_at", "received_at"),
    )
