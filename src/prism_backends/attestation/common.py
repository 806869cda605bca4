"""What both platforms' cores share: errors, policy check results, fetchers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class AttestationError(Exception):
    """Evidence could not be verified; ``reason`` says why, for people."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MalformedEvidence(AttestationError):
    """The bytes are not a well-formed report or quote (size, version, reserved bytes)."""


class SignatureInvalid(AttestationError):
    """A signature over the evidence or in the certificate chain does not verify."""


class ChainInvalid(AttestationError):
    """The certificate chain does not lead to a trusted root, or a certificate is
    expired, revoked, of the wrong product, or disagrees with the evidence."""


class CollateralUnavailable(AttestationError):
    """A certificate or collateral needed is not in the evidence, not given, and
    cannot be fetched (offline)."""


@dataclass(frozen=True, slots=True)
class CheckFailure:
    """One failed policy check: the field, what the policy wants, what was found."""

    field: str
    expected: str
    actual: str

    def __str__(self) -> str:
        return f"{self.field}: expected {self.expected}, got {self.actual}"


class PolicyError(ValueError):
    """A policy document cannot be parsed; the message names the field."""


@dataclass(frozen=True)
class Verified:
    """Evidence whose signatures and chain verified, with its decoded key fields
    (bytes as lower-case hex, numbers as ints) for tokens and people."""

    platform: str  # "sev-snp" or "tdx"
    report_data: bytes
    measurement: str  # hex: SNP MEASUREMENT, TDX MRTD
    tcb: dict[str, Any]
    claims: dict[str, Any] = field(default_factory=dict)


class Fetcher(Protocol):
    """Fetches bytes by URL (AMD KDS, Intel PCS). Injected; never called in tests
    unless faked. Implementations cache."""

    def get(self, url: str) -> bytes: ...
