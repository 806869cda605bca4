"""Intel's certificate chains and ECDSA signatures, as TDX quotes and collateral
use them. Pure: the trusted roots and the time are passed in.

:func:`verify_chain` checks a leaf-first chain: each certificate is X.509 v3
with a P-256 key and an ECDSA-SHA256 signature, valid at ``now``, with the
subject names asked for, each issued by the next; the root is byte-for-byte one
of ``trusted_roots`` and cryptography's path validation
(:class:`~cryptography.x509.verification.PolicyBuilder`, web PKI rules for CAs,
no SAN needed on the leaf) accepts the chain.

A platform sends the same chain, QE report and collateral with every quote, so
what does not depend on the time is remembered, keyed by the objects'
identity through :class:`Same`; validity at ``now`` is checked every time.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from datetime import datetime
from typing import Generic, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from prism_backends.attestation.common import ChainInvalid

_T = TypeVar("_T")
# What cryptography raises for a certificate it loaded but cannot fully read.
X509_ERRORS = (
    ValueError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


def verify_chain(
    chain: Sequence[x509.Certificate],
    trusted_roots: Sequence[x509.Certificate],
    now: datetime,
    *,
    what: str,
    leaf_cn: str,
    intermediate_cns: frozenset[str] | None = None,
) -> None:
    """Check a leaf-first chain ending in a self-issued root: validity at
    ``now``, algorithms (v3, P-256, ECDSA-SHA256), subject names, issuer/subject
    links, the root being trusted, and cryptography's path validation."""
    if len(chain) < 2:
        raise ChainInvalid(f"{what} has {len(chain)} certificate(s); it must end in its root")
    try:
        for certificate in chain:
            _check_validity(certificate, now, what)
    except X509_ERRORS as exc:
        raise ChainInvalid(f"{what}: a certificate is malformed: {exc}") from exc
    # Every other check does not depend on the time, and a platform sends the
    # same chain with every quote: they are done once per chain and remembered.
    problem = _chain_problem(
        tuple(map(Same, chain)), tuple(map(Same, trusted_roots)), leaf_cn, intermediate_cns
    )
    if problem is not None:
        raise ChainInvalid(f"{what}{problem}")


class Same(Generic[_T]):
    """A certificate (or CRL) as a cache key, by identity. Hashing or comparing
    a :class:`~cryptography.x509.Certificate` walks its whole structure (3-5 us,
    several times a quote); the chain parsed from a quote's PEM (remembered by
    its bytes), the trusted roots and the collateral loaded from its bytes are
    the same objects from quote to quote. The key holds its object, so the
    identity cannot be reused while it is remembered; an equal certificate in
    another object merely misses."""

    __slots__ = ("value",)

    def __init__(self, value: _T) -> None:
        self.value = value

    def __hash__(self) -> int:
        return id(self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Same) and other.value is self.value


@functools.lru_cache(maxsize=1024)
def _chain_problem(
    same_chain: tuple[Same[x509.Certificate], ...],
    same_roots: tuple[Same[x509.Certificate], ...],
    leaf_cn: str,
    intermediate_cns: frozenset[str] | None,
) -> str | None:
    """What is wrong with the chain at any time, as the end of a sentence that
    names it, or None."""
    chain = tuple(same.value for same in same_chain)
    trusted_roots = tuple(same.value for same in same_roots)
    try:
        problem = _shape_problem(chain, leaf_cn, intermediate_cns)
    except X509_ERRORS as exc:
        return f": a certificate is malformed: {exc}"
    if problem is not None:
        return problem
    root = chain[-1]
    if not any(root == trusted for trusted in trusted_roots):
        return f" ends in root {root.subject.rfc4514_string()!r}, which is not trusted"
    return _path_problem(chain, trusted_roots)


def _path_problem(
    chain: tuple[x509.Certificate, ...], trusted_roots: tuple[x509.Certificate, ...]
) -> str | None:
    """Why cryptography's path validation refuses the chain, or None. Validity
    at the current time is checked apart, so the path is validated at an
    instant inside every certificate's validity."""
    ee_policy = ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.SubjectAlternativeName, Criticality.AGNOSTIC, None
    )
    inside = max(certificate.not_valid_before_utc for certificate in chain)
    verifier = (
        PolicyBuilder()
        .store(Store(list(trusted_roots)))
        .time(inside)
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee_policy)
        .build_client_verifier()
    )
    try:
        verified = verifier.verify(chain[0], list(chain[1:-1]))
    except VerificationError as exc:
        return f" does not validate: {exc}"
    if verified.chain[-1] != chain[-1]:  # pragma: no cover - the store holds the trusted roots
        return " validated through a root other than its own"
    return None


def _shape_problem(
    chain: Sequence[x509.Certificate], leaf_cn: str, intermediate_cns: frozenset[str] | None
) -> str | None:
    for certificate in chain:
        problem = _algorithm_problem(certificate)
        if problem is not None:
            return problem
    if common_name(chain[0]) != leaf_cn:
        return f": the leaf is {common_name(chain[0])!r}, expected {leaf_cn!r}"
    if intermediate_cns is not None:
        for certificate in chain[1:-1]:
            if common_name(certificate) not in intermediate_cns:
                return (
                    f": the CA is {common_name(certificate)!r},"
                    f" expected one of {sorted(intermediate_cns)}"
                )
    for child, parent in itertools.pairwise(chain):
        if child.issuer != parent.subject:
            return (
                f": {common_name(child)!r} is issued by {child.issuer.rfc4514_string()!r},"
                f" not by the next certificate {common_name(parent)!r}"
            )
    if chain[-1].issuer != chain[-1].subject:
        return " does not end in a self-issued root"
    return None


@functools.lru_cache(maxsize=4096)
def signed_by(signer: Same[x509.Certificate], signature: bytes, message: bytes) -> bool:
    """Whether the certificate's key signed ``message``: the verdict for these
    exact bytes, remembered (a fact about them, so it never goes stale)."""
    key = signer.value.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):  # pragma: no cover - chain checked
        raise ChainInvalid(f"{common_name(signer.value)!r} does not hold an EC key")
    return ecdsa_ok(key, signature, message)


def ecdsa_ok(key: ec.EllipticCurvePublicKey, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` (r || s, 32 bytes each, as Intel's formats carry it)
    is the key's ECDSA-SHA256 signature of ``message``."""
    if len(signature) != 64:
        return False
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if r == 0 or s == 0:
        return False
    try:
        key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def _algorithm_problem(certificate: x509.Certificate) -> str | None:
    name = common_name(certificate)
    if certificate.version != x509.Version.v3:
        return f": {name!r} is not an X.509 v3 certificate"
    if certificate.signature_algorithm_oid != SignatureAlgorithmOID.ECDSA_WITH_SHA256:
        return f": {name!r} is not signed with ECDSA-SHA256"
    key = certificate.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        return f": {name!r} does not hold a P-256 key"
    return None


def _check_validity(certificate: x509.Certificate, now: datetime, what: str) -> None:
    if now < certificate.not_valid_before_utc:
        raise ChainInvalid(
            f"{what}: {common_name(certificate)!r} is not valid before"
            f" {certificate.not_valid_before_utc.isoformat()} (now {now.isoformat()})"
        )
    if now > certificate.not_valid_after_utc:
        raise ChainInvalid(
            f"{what}: {common_name(certificate)!r} expired at"
            f" {certificate.not_valid_after_utc.isoformat()} (now {now.isoformat()})"
        )


def common_name(certificate: x509.Certificate) -> str:
    """The subject's first common name, or "" (for messages and name checks)."""
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")
