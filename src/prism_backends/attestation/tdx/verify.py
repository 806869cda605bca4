"""Verify an Intel TDX quote: signatures, the PCK chain and, optionally, Intel's
collateral (CRLs, TCB info, QE identity). Pure: the trusted roots, the time,
the collateral or a fetcher are all passed in.

What :func:`verify` checks, in order:

1. the quote parses (:mod:`.abi`), strictly;
2. the PCK chain in the quote is three certificates, PCK -> PCK platform or
   processor CA -> root, each X.509 v3 with a P-256 key and an ECDSA-SHA256
   signature, valid at ``now``, with Intel's subject names; the root is
   byte-for-byte one of ``trusted_roots`` and cryptography's path validation
   (:class:`~cryptography.x509.verification.PolicyBuilder`, web PKI rules for
   CAs, no SAN needed on the leaf) accepts the chain at ``now``;
3. the PCK certificate carries well-formed SGX extensions (FMSPC, PCE ID, TCB);
4. the quote signature (ECDSA P-256, SHA-256) over header + body verifies with
   the attestation key in the quote;
5. the QE report's signature verifies with the PCK certificate's key;
6. the QE report binds the attestation key: report_data[0:32] =
   SHA-256(attestation key || QE authentication data), report_data[32:64] = 0.

With collateral (given, or fetched through ``fetcher`` when given and no
collateral is), also:

7. the root CA CRL (signed by the root, current at ``now``) does not revoke
   the PCK CA, and the PCK CRL (signed by the PCK CA, current) does not revoke
   the PCK certificate;
8. TCB info and QE identity are signed by an "Intel SGX TCB Signing"
   certificate whose chain reaches a trusted root at ``now`` and which the root
   CRL does not revoke; they are TDX TCB info v3 / TD_QE identity v2, not past
   their next update, and the TCB info is for the PCK's FMSPC and PCE ID;
9. the QE report matches the QE identity (MRSIGNER, ISVPRODID, MISCSELECT and
   ATTRIBUTES under their masks) and its ISV SVN selects a QE TCB level;
10. the TD's TDX module matches TCB info (MRSIGNERSEAM, SEAM attributes under
    the mask; for module versions > 0, the ``TDX_<version>`` identity and its
    TCB level by the module's SVN);
11. the platform's TCB level: the first level whose SGX components and PCESVN
    (from the PCK) and TDX components (TEE_TCB_SVN, from index 2 when the
    module version is > 0) are all at least the level's.

The TCB status is reported, not judged: a ``Revoked`` level raises
:class:`ChainInvalid`; every other status (``UpToDate``, ``OutOfDate``,
``SWHardeningNeeded``, ..., or ``TcbNotSupported`` when no level matches) is in
:attr:`VerifiedTdx.tcb` for the caller's policy to judge.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

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

from prism_backends.attestation.common import (
    ChainInvalid,
    CollateralUnavailable,
    Fetcher,
    MalformedEvidence,
    SignatureInvalid,
    Verified,
)
from prism_backends.attestation.tdx.abi import (
    BODY_TYPE_TDX_1_5,
    EnclaveReport,
    Quote,
    TdQuoteBody,
    parse_quote,
    pem_certificates,
)
from prism_backends.attestation.tdx.pck import PckExtensions, pck_extensions
from prism_backends.attestation.tdx.pcs import (
    ROOT_CRL_URL,
    Collateral,
    EnclaveTcbLevel,
    QeIdentity,
    SignedJson,
    TcbInfo,
    TcbLevel,
    fetch_collateral,
    issuer_chain_pem,
    parse_qe_identity,
    parse_tcb_info,
    split_signed_json,
)

PLATFORM = "tdx"
PCK_CERTIFICATE_CN = "Intel SGX PCK Certificate"
PCK_CA_CNS = {"Intel SGX PCK Platform CA": "platform", "Intel SGX PCK Processor CA": "processor"}
TCB_SIGNING_CN = "Intel SGX TCB Signing"
TCB_INFO_ID = "TDX"
TCB_INFO_VERSION = 3
QE_IDENTITY_ID = "TD_QE"
QE_IDENTITY_VERSION = 2
TCB_NOT_SUPPORTED = "TcbNotSupported"
_T = TypeVar("_T")
# What cryptography raises for a certificate it loaded but cannot fully read.
_X509_ERRORS = (
    ValueError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


@dataclass(frozen=True)
class TcbEvaluation:
    """The TCB verdict from Intel's collateral.

    ``status`` is the platform's status converged with the QE's and the TDX
    module's (an ``OutOfDate`` QE or module makes ``UpToDate`` ``OutOfDate``);
    ``TcbNotSupported`` means no TCB level matched.
    """

    status: str
    platform_status: str
    qe_status: str
    tdx_module_status: str | None
    tcb_date: str | None
    advisory_ids: tuple[str, ...]
    tcb_evaluation_data_number: int
    fmspc: bytes


@dataclass(frozen=True)
class VerifiedTdx:
    """A quote whose signatures and chain verified, with what they vouch for."""

    quote: Quote
    verified: Verified
    pck: PckExtensions
    pck_chain: tuple[x509.Certificate, ...]
    tcb: TcbEvaluation | None


def verify(
    raw: bytes,
    *,
    trusted_roots: list[x509.Certificate],
    now: datetime,
    collateral: Collateral | None = None,
    fetcher: Fetcher | None = None,
) -> VerifiedTdx:
    """Verify a raw TDX quote (see the module docstring for every check).

    ``now`` must be timezone-aware. Collateral is checked when given, or fetched
    through ``fetcher`` (a :class:`~.pcs.HeaderFetcher`) when only that is given;
    with neither, no revocation or TCB status is checked and ``tcb`` is None.
    Raises :class:`MalformedEvidence`, :class:`SignatureInvalid`,
    :class:`ChainInvalid` or :class:`CollateralUnavailable`.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    roots = list(trusted_roots)
    if not roots:
        raise ChainInvalid("no trusted root certificates were given")
    quote = parse_quote(raw)
    chain = _pck_chain(quote)
    verify_chain(
        chain,
        roots,
        now,
        what="PCK certificate chain",
        leaf_cn=PCK_CERTIFICATE_CN,
        intermediate_cns=frozenset(PCK_CA_CNS),
    )
    pck = _pck_extensions(chain[0])
    verify_quote_signature(quote)
    verify_qe_report(quote, chain[0])
    if collateral is None and fetcher is not None:
        ca, root_crl_url = _collateral_source(_Same(chain[1]), _Same(chain[-1]))
        collateral = fetch_collateral(fetcher, fmspc=pck.fmspc, ca=ca, root_crl_url=root_crl_url)
    tcb = None
    if collateral is not None:
        tcb = evaluate_collateral(quote, chain, pck, collateral, roots, now)
    return VerifiedTdx(
        quote=quote,
        verified=_verified(quote, pck, tcb),
        pck=pck,
        pck_chain=tuple(chain),
        tcb=tcb,
    )


def verify_quote_signature(quote: Quote) -> None:
    """Check the quote signature over the signed bytes with the attestation key."""
    signed = quote.signed_data
    try:
        key = _attestation_key(signed.attestation_key)
    except ValueError as exc:
        raise SignatureInvalid("the attestation key is not a P-256 point") from exc
    if not _ecdsa_ok(key, signed.signature, quote.signed_bytes()):
        raise SignatureInvalid("the quote signature does not verify with the attestation key")


@functools.lru_cache(maxsize=4096)
def _attestation_key(point: bytes) -> ec.EllipticCurvePublicKey:
    """The P-256 key of an X || Y point. A quoting enclave signs every quote
    with the same key until it restarts; loading it, and OpenSSL's preparing it
    on first use, cost about a fifth of a verify. Only the key is remembered,
    never a verdict: each quote's signature is verified. ValueError (not
    remembered) when the point is not on the curve."""
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + point)


def verify_qe_report(quote: Quote, pck_certificate: x509.Certificate) -> None:
    """Check the QE report's signature by the PCK key and its binding of the
    attestation key (report_data = SHA-256(key || QE auth data) || 32 zeros)."""
    certification = quote.signed_data.certification
    # The quoting enclave sends the same report, bound to its attestation key,
    # with every quote until it restarts: its signature's verdict is remembered.
    if not _signed_by(
        _Same(pck_certificate), certification.qe_report_signature, certification.qe_report_raw
    ):
        raise SignatureInvalid("the QE report signature does not verify with the PCK key")
    digest = hashlib.sha256(quote.signed_data.attestation_key + certification.qe_auth_data).digest()
    report_data = certification.qe_report.report_data
    if report_data[:32] != digest or report_data[32:] != bytes(32):
        raise SignatureInvalid(
            "the QE report does not bind the attestation key: report_data is not"
            " SHA-256(attestation key || QE auth data) followed by zeros"
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
    except _X509_ERRORS as exc:
        raise ChainInvalid(f"{what}: a certificate is malformed: {exc}") from exc
    # Every other check does not depend on the time, and a platform sends the
    # same chain with every quote: they are done once per chain and remembered.
    problem = _chain_problem(
        tuple(map(_Same, chain)), tuple(map(_Same, trusted_roots)), leaf_cn, intermediate_cns
    )
    if problem is not None:
        raise ChainInvalid(f"{what}{problem}")


class _Same(Generic[_T]):
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
        return isinstance(other, _Same) and other.value is self.value


@functools.lru_cache(maxsize=1024)
def _chain_problem(
    same_chain: tuple[_Same[x509.Certificate], ...],
    same_roots: tuple[_Same[x509.Certificate], ...],
    leaf_cn: str,
    intermediate_cns: frozenset[str] | None,
) -> str | None:
    """What is wrong with the chain at any time, as the end of a sentence that
    names it, or None."""
    chain = tuple(same.value for same in same_chain)
    trusted_roots = tuple(same.value for same in same_roots)
    try:
        problem = _shape_problem(chain, leaf_cn, intermediate_cns)
    except _X509_ERRORS as exc:
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
    if _cn(chain[0]) != leaf_cn:
        return f": the leaf is {_cn(chain[0])!r}, expected {leaf_cn!r}"
    if intermediate_cns is not None:
        for certificate in chain[1:-1]:
            if _cn(certificate) not in intermediate_cns:
                return (
                    f": the CA is {_cn(certificate)!r}, expected one of {sorted(intermediate_cns)}"
                )
    for child, parent in itertools.pairwise(chain):
        if child.issuer != parent.subject:
            return (
                f": {_cn(child)!r} is issued by {child.issuer.rfc4514_string()!r},"
                f" not by the next certificate {_cn(parent)!r}"
            )
    if chain[-1].issuer != chain[-1].subject:
        return " does not end in a self-issued root"
    return None


def evaluate_collateral(
    quote: Quote,
    chain: Sequence[x509.Certificate],
    pck: PckExtensions,
    collateral: Collateral,
    trusted_roots: Sequence[x509.Certificate],
    now: datetime,
) -> TcbEvaluation:
    """Checks 7-11 of the module docstring, on a quote whose chain verified."""
    leaf, ca, root = chain[0], chain[1], chain[-1]
    root_crl = _current_crl(collateral.root_crl, root, now, "root CA CRL")
    _not_revoked(ca, root_crl, "root CA CRL")
    pck_crl = _current_crl(collateral.pck_crl, ca, now, "PCK CRL")
    _not_revoked(leaf, pck_crl, "PCK CRL")

    tcb_json = _split(collateral.tcb_info, "tcbInfo", "TCB info")
    _verify_signed_json(
        tcb_json, collateral.tcb_info_issuer_chain, trusted_roots, root_crl, now, "TCB info"
    )
    tcb_info = _parsed_tcb_info(collateral.tcb_info)
    qe_json = _split(collateral.qe_identity, "enclaveIdentity", "QE identity")
    _verify_signed_json(
        qe_json, collateral.qe_identity_issuer_chain, trusted_roots, root_crl, now, "QE identity"
    )
    qe_identity = _parsed_qe_identity(collateral.qe_identity)
    _check_tcb_info(tcb_info, pck, now)
    _check_qe_identity(qe_identity, now)

    qe_level = _qe_level(quote.signed_data.certification.qe_report, qe_identity)
    module_level = _tdx_module_level(quote.body, tcb_info)
    platform_level = _platform_level(tcb_info, pck, quote.body)
    platform_status = platform_level.status if platform_level else TCB_NOT_SUPPORTED
    qe_status = qe_level.status if qe_level else TCB_NOT_SUPPORTED
    module_status = None
    if quote.body.tee_tcb_svn[1] > 0:
        module_status = module_level.status if module_level else TCB_NOT_SUPPORTED
    for name, status in (
        ("platform TCB", platform_status),
        ("QE TCB", qe_status),
        ("TDX module TCB", module_status),
    ):
        if status == "Revoked":
            raise ChainInvalid(f"the {name} level is revoked by Intel")
    advisories: list[str] = []
    for level in (platform_level, qe_level, module_level):
        for advisory in level.advisory_ids if level else ():
            if advisory not in advisories:
                advisories.append(advisory)
    return TcbEvaluation(
        status=_converge(_converge(platform_status, module_status), qe_status),
        platform_status=platform_status,
        qe_status=qe_status,
        tdx_module_status=module_status,
        tcb_date=platform_level.tcb_date if platform_level else None,
        advisory_ids=tuple(advisories),
        tcb_evaluation_data_number=min(
            tcb_info.tcb_evaluation_data_number, qe_identity.tcb_evaluation_data_number
        ),
        fmspc=tcb_info.fmspc,
    )


def _pck_chain(quote: Quote) -> list[x509.Certificate]:
    return list(_parsed_pck_chain(quote.signed_data.certification.pck_chain_pem))


@functools.lru_cache(maxsize=1024)
def _parsed_pck_chain(pem: bytes) -> tuple[x509.Certificate, ...]:
    """A platform sends the same PEM chain with every quote: parsed once."""
    ders = pem_certificates(pem, what="PCK certificate chain")
    if len(ders) != 3:
        raise MalformedEvidence(
            f"the PCK certificate chain holds {len(ders)} certificate(s); expected 3"
            " (PCK, PCK CA, root)"
        )
    try:
        return tuple(x509.load_der_x509_certificate(der) for der in ders)
    except _X509_ERRORS as exc:
        raise MalformedEvidence(f"a certificate in the PCK chain does not parse: {exc}") from exc


def _pck_extensions(certificate: x509.Certificate) -> PckExtensions:
    return _remembered_pck_extensions(_Same(certificate))


@functools.lru_cache(maxsize=1024)
def _remembered_pck_extensions(certificate: _Same[x509.Certificate]) -> PckExtensions:
    """The SGX extensions of a PCK certificate, parsed once per certificate (a
    malformed one raises, and is parsed again next time)."""
    return pck_extensions(certificate.value)


@functools.lru_cache(maxsize=4096)
def _signed_by(signer: _Same[x509.Certificate], signature: bytes, message: bytes) -> bool:
    """Whether the certificate's key signed ``message``: the verdict for these
    exact bytes, remembered (a fact about them, so it never goes stale)."""
    key = signer.value.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):  # pragma: no cover - chain checked
        raise ChainInvalid(f"{_cn(signer.value)!r} does not hold an EC key")
    return _ecdsa_ok(key, signature, message)


def _ecdsa_ok(key: ec.EllipticCurvePublicKey, signature: bytes, message: bytes) -> bool:
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
    name = _cn(certificate)
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
            f"{what}: {_cn(certificate)!r} is not valid before"
            f" {certificate.not_valid_before_utc.isoformat()} (now {now.isoformat()})"
        )
    if now > certificate.not_valid_after_utc:
        raise ChainInvalid(
            f"{what}: {_cn(certificate)!r} expired at"
            f" {certificate.not_valid_after_utc.isoformat()} (now {now.isoformat()})"
        )


def _cn(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


@functools.lru_cache(maxsize=1024)
def _collateral_source(
    ca: _Same[x509.Certificate], root: _Same[x509.Certificate]
) -> tuple[str, str]:
    """The PCK CA's kind (``platform`` or ``processor``) and the root CRL's URL,
    read from the certificates' names and extensions once per chain."""
    return PCK_CA_CNS[_cn(ca.value)], _crl_url(root.value)


def _crl_url(root: x509.Certificate) -> str:
    try:
        points = root.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except (x509.ExtensionNotFound, *_X509_ERRORS):
        return ROOT_CRL_URL
    for point in points:
        for name in point.full_name or ():
            if isinstance(name, x509.UniformResourceIdentifier) and name.value.startswith(
                "https://"
            ):
                return name.value
    return ROOT_CRL_URL


def _current_crl(
    data: bytes, issuer: x509.Certificate, now: datetime, what: str
) -> x509.CertificateRevocationList:
    crl, next_update, last_update = _signed_crl(data, _Same(issuer), what)
    if next_update is None or now > next_update:
        raise CollateralUnavailable(
            f"the {what} is stale (next update {next_update and next_update.isoformat()},"
            f" now {now.isoformat()})"
        )
    if now < last_update:
        raise CollateralUnavailable(
            f"the {what} is not yet valid (issued {last_update.isoformat()})"
        )
    return crl


@functools.lru_cache(maxsize=256)
def _signed_crl(
    data: bytes, issuer: _Same[x509.Certificate], what: str
) -> tuple[x509.CertificateRevocationList, datetime | None, datetime]:
    """The CRL, its next and last update, once its issuer's name and signature
    are checked. A CRL is the same bytes for every quote until Intel issues the
    next one: these checks, which do not depend on the time, are remembered."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            crl = x509.load_pem_x509_crl(data)
        else:
            crl = x509.load_der_x509_crl(data)
        issuer_name, next_update, last_update = crl.issuer, crl.next_update_utc, crl.last_update_utc
    except _X509_ERRORS as exc:
        raise CollateralUnavailable(f"the {what} does not parse: {exc}") from exc
    subject = issuer.value.subject
    if issuer_name != subject:
        raise CollateralUnavailable(
            f"the {what} is issued by {issuer_name.rfc4514_string()!r},"
            f" not by {subject.rfc4514_string()!r}"
        )
    if not crl.is_signature_valid(issuer.value.public_key()):  # type: ignore[arg-type]
        raise SignatureInvalid(f"the {what} signature does not verify")
    return crl, next_update, last_update


def _not_revoked(
    certificate: x509.Certificate, crl: x509.CertificateRevocationList, what: str
) -> None:
    if crl.get_revoked_certificate_by_serial_number(certificate.serial_number) is not None:
        raise ChainInvalid(
            f"{_cn(certificate)!r} (serial {certificate.serial_number:x}) is revoked by the {what}"
        )


def _verify_signed_json(
    signed: SignedJson,
    issuer_chain: bytes,
    trusted_roots: Sequence[x509.Certificate],
    root_crl: x509.CertificateRevocationList,
    now: datetime,
    what: str,
) -> None:
    chain = _issuer_chain(issuer_chain, what)
    verify_chain(chain, trusted_roots, now, what=f"{what} signing chain", leaf_cn=TCB_SIGNING_CN)
    if not _issued_by(_Same(root_crl), _Same(chain[-1])):
        raise CollateralUnavailable(f"the root CA CRL does not cover the {what} signing chain")
    for certificate in chain[:-1]:
        _not_revoked(certificate, root_crl, "root CA CRL")
    if not _signed_by(_Same(chain[0]), signed.signature, signed.signed_bytes):
        raise SignatureInvalid(f"the {what} signature does not verify")


@functools.lru_cache(maxsize=256)
def _issued_by(
    crl: _Same[x509.CertificateRevocationList], certificate: _Same[x509.Certificate]
) -> bool:
    """Whether the CRL's issuer is the certificate's subject (each name is
    built afresh in Python on every access: remembered per pair of objects)."""
    return crl.value.issuer == certificate.value.subject


# TCB info, QE identity and their signing chain are the same bytes for every
# quote of a platform until Intel's next update: each is split, parsed and
# loaded once per exact bytes (what fails raises and is not remembered).


@functools.lru_cache(maxsize=256)
def _issuer_chain(issuer_chain: bytes, what: str) -> tuple[x509.Certificate, ...]:
    try:
        ders = pem_certificates(issuer_chain_pem(issuer_chain), what=f"{what} issuer chain")
        return tuple(x509.load_der_x509_certificate(der) for der in ders)
    except (MalformedEvidence, *_X509_ERRORS) as exc:
        raise CollateralUnavailable(f"the {what} issuer chain does not parse: {exc}") from exc


_split = functools.lru_cache(maxsize=256)(split_signed_json)


@functools.lru_cache(maxsize=256)
def _parsed_tcb_info(body: bytes) -> TcbInfo:
    return parse_tcb_info(_split(body, "tcbInfo", "TCB info").value)


@functools.lru_cache(maxsize=256)
def _parsed_qe_identity(body: bytes) -> QeIdentity:
    return parse_qe_identity(_split(body, "enclaveIdentity", "QE identity").value)


def _check_tcb_info(tcb_info: TcbInfo, pck: PckExtensions, now: datetime) -> None:
    if tcb_info.id != TCB_INFO_ID or tcb_info.version != TCB_INFO_VERSION:
        raise CollateralUnavailable(
            f"TCB info is {tcb_info.id!r} version {tcb_info.version};"
            f" expected {TCB_INFO_ID!r} version {TCB_INFO_VERSION}"
        )
    if tcb_info.tcb_type != 0:
        raise CollateralUnavailable(f"TCB info tcbType {tcb_info.tcb_type} is not supported (0)")
    if now > tcb_info.next_update:
        raise CollateralUnavailable(
            f"TCB info is stale (next update {tcb_info.next_update.isoformat()},"
            f" now {now.isoformat()})"
        )
    if not tcb_info.tcb_levels:
        raise CollateralUnavailable("TCB info has no TCB levels")
    if tcb_info.fmspc != pck.fmspc:
        raise CollateralUnavailable(
            f"TCB info is for FMSPC {tcb_info.fmspc.hex()}, the PCK's is {pck.fmspc.hex()}"
        )
    if tcb_info.pce_id != pck.pce_id:
        raise CollateralUnavailable(
            f"TCB info is for PCE ID {tcb_info.pce_id.hex()}, the PCK's is {pck.pce_id.hex()}"
        )


def _check_qe_identity(qe_identity: QeIdentity, now: datetime) -> None:
    if qe_identity.id != QE_IDENTITY_ID or qe_identity.version != QE_IDENTITY_VERSION:
        raise CollateralUnavailable(
            f"QE identity is {qe_identity.id!r} version {qe_identity.version};"
            f" expected {QE_IDENTITY_ID!r} version {QE_IDENTITY_VERSION}"
        )
    if now > qe_identity.next_update:
        raise CollateralUnavailable(
            f"QE identity is stale (next update {qe_identity.next_update.isoformat()},"
            f" now {now.isoformat()})"
        )
    if not qe_identity.tcb_levels:
        raise CollateralUnavailable("QE identity has no TCB levels")


def _masked(value: bytes, mask: bytes) -> bytes:
    return bytes(a & b for a, b in zip(value, mask, strict=True))


def _qe_level(report: EnclaveReport, identity: QeIdentity) -> EnclaveTcbLevel | None:
    if report.mr_signer != identity.mr_signer:
        raise ChainInvalid(
            f"the QE's MRSIGNER {report.mr_signer.hex()} is not Intel's TD QE's"
            f" {identity.mr_signer.hex()}"
        )
    if report.isv_prod_id != identity.isv_prod_id:
        raise ChainInvalid(
            f"the QE's ISVPRODID {report.isv_prod_id} is not the TD QE's {identity.isv_prod_id}"
        )
    misc_select = report.misc_select.to_bytes(4, "little")
    if _masked(misc_select, identity.misc_select_mask) != identity.misc_select:
        raise ChainInvalid(
            f"the QE's MISCSELECT {misc_select.hex()} under mask"
            f" {identity.misc_select_mask.hex()} is not {identity.misc_select.hex()}"
        )
    if _masked(report.attributes, identity.attributes_mask) != identity.attributes:
        raise ChainInvalid(
            f"the QE's ATTRIBUTES {report.attributes.hex()} under mask"
            f" {identity.attributes_mask.hex()} are not {identity.attributes.hex()}"
        )
    return _enclave_level(identity.tcb_levels, report.isv_svn)


def _enclave_level(levels: Sequence[EnclaveTcbLevel], isv_svn: int) -> EnclaveTcbLevel | None:
    for level in levels:
        if isv_svn >= level.isv_svn:
            return level
    return None


def _tdx_module_level(body: TdQuoteBody, tcb_info: TcbInfo) -> EnclaveTcbLevel | None:
    module_svn, module_version = body.tee_tcb_svn[0], body.tee_tcb_svn[1]
    identity = tcb_info.tdx_module
    if module_version > 0:
        wanted = f"TDX_{module_version:02X}"
        matches = [item for item in tcb_info.tdx_module_identities if item.id.upper() == wanted]
        if not matches:
            raise ChainInvalid(f"TCB info has no TDX module identity {wanted}")
        identity = matches[0]
    if body.mr_signer_seam != identity.mr_signer:
        raise ChainInvalid(
            f"MRSIGNERSEAM {body.mr_signer_seam.hex()} is not the TDX module signer"
            f" {identity.mr_signer.hex()} in TCB info"
        )
    if _masked(body.seam_attributes, identity.attributes_mask) != identity.attributes:
        raise ChainInvalid(
            f"SEAM attributes {body.seam_attributes.hex()} under mask"
            f" {identity.attributes_mask.hex()} are not {identity.attributes.hex()}"
        )
    if module_version == 0:
        return None
    return _enclave_level(identity.tcb_levels, module_svn)


def _platform_level(tcb_info: TcbInfo, pck: PckExtensions, body: TdQuoteBody) -> TcbLevel | None:
    tee_tcb_svn = body.tee_tcb_svn
    first_tdx = 2 if tee_tcb_svn[1] > 0 else 0
    for level in tcb_info.tcb_levels:
        sgx_ok = all(
            have >= need
            for have, need in zip(pck.tcb_components, level.sgx_components, strict=True)
        )
        tdx_ok = all(tee_tcb_svn[i] >= level.tdx_components[i] for i in range(first_tdx, 16))
        if sgx_ok and pck.pce_svn >= level.pce_svn and tdx_ok:
            return level
    return None


def _converge(status: str, other: str | None) -> str:
    if TCB_NOT_SUPPORTED in (status, other):
        return TCB_NOT_SUPPORTED
    if other == "OutOfDate":
        if status in ("UpToDate", "SWHardeningNeeded"):
            return "OutOfDate"
        if status in ("ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"):
            return "OutOfDateConfigurationNeeded"
    return status


def _verified(quote: Quote, pck: PckExtensions, tcb: TcbEvaluation | None) -> Verified:
    body, header = quote.body, quote.header
    tcb_claims: dict[str, Any] = {
        "tee_tcb_svn": body.tee_tcb_svn.hex(),
        "qe_svn": header.qe_svn,
        "pce_svn": header.pce_svn,
        "pck_pce_svn": pck.pce_svn,
        "pck_cpu_svn": pck.cpu_svn.hex(),
        "fmspc": pck.fmspc.hex(),
        "pce_id": pck.pce_id.hex(),
        "qe_isv_svn": quote.signed_data.certification.qe_report.isv_svn,
    }
    if body.tee_tcb_svn2 is not None:
        tcb_claims["tee_tcb_svn2"] = body.tee_tcb_svn2.hex()
    if tcb is not None:
        tcb_claims.update(
            {
                "tcb_status": tcb.status,
                "platform_tcb_status": tcb.platform_status,
                "qe_tcb_status": tcb.qe_status,
                "tdx_module_tcb_status": tcb.tdx_module_status,
                "tcb_date": tcb.tcb_date,
                "advisory_ids": list(tcb.advisory_ids),
                "tcb_evaluation_data_number": tcb.tcb_evaluation_data_number,
            }
        )
    claims: dict[str, Any] = {
        "quote_version": header.version,
        "tdx_version": "1.5" if quote.body_type == BODY_TYPE_TDX_1_5 else "1.0",
        "qe_vendor_id": header.qe_vendor_id.hex(),
        "mr_seam": body.mr_seam.hex(),
        "mr_signer_seam": body.mr_signer_seam.hex(),
        "seam_attributes": body.seam_attributes.hex(),
        "td_attributes": body.td_attributes.hex(),
        "xfam": body.xfam.hex(),
        "mr_td": body.mr_td.hex(),
        "mr_config_id": body.mr_config_id.hex(),
        "mr_owner": body.mr_owner.hex(),
        "mr_owner_config": body.mr_owner_config.hex(),
        "rtmr0": body.rtmrs[0].hex(),
        "rtmr1": body.rtmrs[1].hex(),
        "rtmr2": body.rtmrs[2].hex(),
        "rtmr3": body.rtmrs[3].hex(),
        "debug": bool(body.td_attributes[0] & 1),
    }
    if body.mr_service_td is not None:
        claims["mr_service_td"] = body.mr_service_td.hex()
    return Verified(
        platform=PLATFORM,
        report_data=body.report_data,
        measurement=body.mr_td.hex(),
        tcb=tcb_claims,
        claims=claims,
    )
