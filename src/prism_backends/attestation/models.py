"""The keys attestation tokens are signed with, shared by every process."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from prism_backends.db.base import Base, UTCDateTime


class TokenSigningKey(Base):
    """A signing key: current while ``retired_at`` is NULL; published in the JWKS
    until ``publish_until`` so tokens it signed keep validating."""

    __tablename__ = "attestation_signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(16))
    public_jwk: Mapped[str] = mapped_column(Text)  # JSON
    sealed_private_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    publish_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
