"""Verify an SEV-SNP report: its ECDSA signature and its VCEK/VLEK chain to AMD.

The chain VCEK -> ASK -> ARK (or VLEK -> ASVK -> ARK) is RSASSA-PSS (SHA-384,
MGF1-SHA-384, 48-byte salt) signed, which cryptography's path builder refuses,
so each link is checked here by hand: signature with the issuer's key, issuer
name = issuer's subject, validity at ``now``, the AMD subject names KDS
specifies, CA and key-usage flags, no unknown critical extension. The ARK must
be the bundled root for the product (byte-for-byte). Then the report's
signature is checked with the endorsement key and the certificate's TCB and
hwid extensions must match the report's REPORTED_TCB and CHIP_ID.

Not checked here: certificate revocation (AMD's CRL, see :mod:`.crl`, applied
by the caller when asked), and anything a policy decides (see :mod:`.validate`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import ExtensionOID, NameOID, SignatureAlgorithmOID

from prism_backends.attestation.common import (
    ChainInvalid,
    CollateralUnavailable,
    Fetcher,
    MalformedEvidence,
    SignatureInvalid,
    Verified,
)
from prism_backends.attestation.snp.abi import (
    SIGN_ECDSA_P384_SHA384,
    TURIN,
    CertTable,
    Report,
    SigningKey,
    decode_tcb,
    parse_attestation,
)
from prism_backends.attestation.snp.kds import (
    EndorsementExtensions,
    hwid_size,
    normalize_product,
    parse_endorsement_extensions,
    vcek_url,
)
from prism_backends.attestation.snp.trust import ProductRoots, load_certificate

PLATFORM = "sev-snp"

AMD_LOCATION = (
    (NameOID.COUNTRY_NAME, "country", "US"),
    (NameOID.LOCALITY_NAME, "locality", "Santa Clara"),
    (NameOID.STATE_OR_PROVINCE_NAME, "state", "CA"),
    (NameOID.ORGANIZATION_NAME, "organization", "Advanced Micro Devices"),
    (NameOID.ORGANIZATIONAL_UNIT_NAME, "organizational unit", "Engineering"),
)
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
_KNOWN_CRITICAL = {ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE}


@dataclass(frozen=True)
class VerifiedSnp:
    """A report whose signature and chain verified: the parsed report, the
    shared :class:`Verified` summary, the product line, which key signed it, the
    endorsement certificate's extensions and the certificate table it came with."""

    report: Report
    verified: Verified
    product: str
    signing_key: SigningKey
    endorsement: EndorsementExtensions
    certificates: CertTable
    ark: x509.Certificate | None = None  # the chain it verified through,
    intermediate: x509.Certificate | None = None  # for the CRL check (ASK or ASVK)


def verify(
    raw: bytes,
    *,
    roots: Mapping[str, ProductRoots],
    now: datetime,
    vcek: bytes | None = None,
    fetcher: Fetcher | None = None,
    product: str | None = None,
) -> VerifiedSnp:
    """Verify an SEV-SNP report (optionally followed by its certificate table).

    The endorsement key certificate comes from the report's certificate table,
    else ``vcek`` (DER or PEM; a VLEK for VLEK-signed reports), else AMD KDS via
    ``fetcher`` (VCEK only; needs the product: ``product`` or the report's CPUID
    fields). ``roots`` maps a product line to its trusted :class:`ProductRoots`
    (see ``roots.bundled_roots``); ``now`` must be timezone-aware. ``product``
    (``"Milan"``, ``"Genoa"``, ``"Turin"``) pins the expected product; when None
    it is taken from the certificate's product-name extension.

    Raises MalformedEvidence, SignatureInvalid, ChainInvalid or
    CollateralUnavailable (all AttestationError)."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    try:
        return _verify(raw, roots=roots, now=now, vcek=vcek, fetcher=fetcher, product=product)
    except (ValueError, UnsupportedAlgorithm) as exc:
        # cryptography parses certificates lazily: a field that does not parse
        # surfaces here, and means the chain cannot be trusted.
        raise ChainInvalid(
            f"the VCEK/VLEK or a certificate of its chain does not parse: {exc}"
        ) from exc


def _verify(
    raw: bytes,
    *,
    roots: Mapping[str, ProductRoots],
    now: datetime,
    vcek: bytes | None,
    fetcher: Fetcher | None,
    product: str | None,
) -> VerifiedSnp:
    wanted = normalize_product(product) if product is not None else None

    attestation = parse_attestation(raw)
    report = attestation.report
    kind = report.signing_key
    if kind == SigningKey.NONE:
        raise SignatureInvalid("the report is unsigned (SIGNER_INFO.SIGNING_KEY is NONE)")
    if report.signature_algo != SIGN_ECDSA_P384_SHA384:
        raise SignatureInvalid(
            f"SIGNATURE_ALGO {report.signature_algo} at offset 0x034 is not supported "
            "(expected 1, ECDSA P-384 with SHA-384)"
        )
    role = kind.name
    cpuid_product = report.cpuid_product
    if wanted is not None and cpuid_product is not None and cpuid_product != wanted:
        raise ChainInvalid(f"the report's CPUID names product {cpuid_product}, expected {wanted}")

    leaf_der = _endorsement_certificate(
        report, attestation.certificates, kind, vcek, fetcher, wanted or cpuid_product
    )
    leaf, extensions = _checked_leaf(leaf_der, kind)
    line = extensions.product
    if wanted is not None and line != wanted:
        raise ChainInvalid(f"the {role} certificate is for product {line}, expected {wanted}")
    if cpuid_product is not None and line != cpuid_product:
        raise ChainInvalid(
            f"the {role} certificate is for product {line} but the report's CPUID names "
            f"{cpuid_product}"
        )
    trusted = roots.get(line)
    if trusted is None:
        raise ChainInvalid(f"no trusted AMD roots for product {line}")
    if trusted.product != line:
        raise ChainInvalid(f"the roots given for {line} are {trusted.product}'s")

    ark, intermediate = _chain(leaf_der, kind, line, trusted, attestation.certificates)
    for cert, cert_role in ((ark, "ARK"), (intermediate, _intermediate_role(kind)), (leaf, role)):
        _check_validity(cert, cert_role, now)
    _verify_report_signature(report, leaf, role)
    _match_extensions(report, extensions, kind, role)
    return VerifiedSnp(
        report=report,
        verified=Verified(
            platform=PLATFORM,
            report_data=report.report_data,
            measurement=report.measurement.hex(),
            tcb=tcb_claims(report, line),
            claims=report_claims(report, extensions),
        ),
        product=line,
        signing_key=kind,
        endorsement=extensions,
        certificates=attestation.certificates,
        ark=ark,
        intermediate=intermediate,
    )


def _endorsement_certificate(
    report: Report,
    table: CertTable,
    kind: SigningKey,
    given: bytes | None,
    fetcher: Fetcher | None,
    product: str | None,
) -> bytes:
    role = kind.name
    from_table = table.vcek if kind == SigningKey.VCEK else table.vlek
    if from_table is not None:
        return from_table
    if given is not None:
        return bytes(given)
    if fetcher is None:
        raise CollateralUnavailable(
            f"no {role} certificate: none in the report's certificate table, none given, "
            "and no fetcher"
        )
    if kind == SigningKey.VLEK:
        raise CollateralUnavailable(
            "the VLEK certificate is not in the report's certificate table nor given; AMD KDS "
            "serves VLEKs only to the cloud provider"
        )
    if product is None:
        raise CollateralUnavailable(
            f"cannot fetch the VCEK: the product is unknown (report version {report.version} "
            "carries no CPUID product); pass product="
        )
    if not any(report.chip_id):
        raise CollateralUnavailable("cannot fetch the VCEK: the report's CHIP_ID is masked")
    size = hwid_size(product)
    if any(report.chip_id[size:]):
        raise MalformedEvidence(
            f"{product} CHIP_ID bytes {size}-63 (offset 0x{0x1A0 + size:03x}) must be zero"
        )
    url = vcek_url(product, report.chip_id, report.reported_tcb)
    try:
        return bytes(fetcher.get(url))
    except CollateralUnavailable:
        raise
    except Exception as exc:
        raise CollateralUnavailable(f"fetching the VCEK from {url} failed: {exc}") from exc


def _check_amd_name(name: x509.Name, what: str, common_name: str) -> None:
    for oid, label, value in (*AMD_LOCATION, (NameOID.COMMON_NAME, "common name", common_name)):
        found = [a.value for a in name.get_attributes_for_oid(oid)]
        if found != [value]:
            shown = ", ".join(str(v) for v in found) or "none"
            raise ChainInvalid(f"{what} {label} is {shown!s}, expected {value!r}")


def _check_validity(cert: x509.Certificate, role: str, now: datetime) -> None:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < start:
        raise ChainInvalid(f"the {role} certificate is not valid until {start.isoformat()}")
    if now > end:
        raise ChainInvalid(f"the {role} certificate expired at {end.isoformat()}")


def _check_signed_by(
    cert: x509.Certificate, role: str, issuer: x509.Certificate, issuer_role: str
) -> None:
    if cert.issuer != issuer.subject:
        raise ChainInvalid(
            f"the {role} certificate's issuer {cert.issuer.rfc4514_string()} is not the "
            f"{issuer_role}'s subject {issuer.subject.rfc4514_string()}"
        )
    if cert.signature_algorithm_oid != SignatureAlgorithmOID.RSASSA_PSS or not isinstance(
        cert.signature_hash_algorithm, hashes.SHA384
    ):
        raise ChainInvalid(f"the {role} certificate is not signed with RSASSA-PSS SHA-384")
    key = issuer.public_key()
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size < 2048:
        raise ChainInvalid(f"the {issuer_role} key is not an RSA key of at least 2048 bits")
    issuer_key = key.public_bytes(serialization.Encoding.DER, _SPKI)
    if not _pss_sha384_valid(issuer_key, cert.signature, cert.tbs_certificate_bytes):
        raise SignatureInvalid(
            f"the {role} certificate's signature does not verify with the {issuer_role} key"
        )


_SPKI = serialization.PublicFormat.SubjectPublicKeyInfo


@functools.lru_cache(maxsize=4096)
def _pss_sha384_valid(issuer_key: bytes, signature: bytes, signed: bytes) -> bool:
    """Whether ``signature`` over ``signed`` verifies with the RSA key (DER).

    The same ARK, ASK and VCEK come with every report of a machine: their
    signatures are verified once and remembered by their bytes (what is
    remembered is a fact about these bytes, so it can never go stale; validity
    periods and everything else are still checked on every report)."""
    key = serialization.load_der_public_key(issuer_key)
    assert isinstance(key, rsa.RSAPublicKey)
    try:
        key.verify(signature, signed, _PSS, hashes.SHA384())
    except InvalidSignature:
        return False
    return True


def _check_critical(cert: x509.Certificate, role: str) -> None:
    for ext in cert.extensions:
        if ext.critical and ext.oid not in _KNOWN_CRITICAL:
            raise ChainInvalid(
                f"the {role} certificate has an unknown critical extension {ext.oid.dotted_string}"
            )


def _check_ca(cert: x509.Certificate, role: str, *, min_path: int) -> None:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise ChainInvalid(f"the {role} certificate lacks basic constraints or key usage") from exc
    if not constraints.ca:
        raise ChainInvalid(f"the {role} certificate is not a CA")
    if constraints.path_length is not None and constraints.path_length < min_path:
        raise ChainInvalid(
            f"the {role} certificate's path length {constraints.path_length} is too short"
        )
    if not usage.key_cert_sign:
        raise ChainInvalid(f"the {role} certificate may not sign certificates (key usage)")


def _check_leaf(cert: x509.Certificate, kind: SigningKey, role: str) -> EndorsementExtensions:
    if cert.version != x509.Version.v3:
        raise ChainInvalid(f"the {role} certificate is not X.509 version 3")
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise ChainInvalid(f"the {role} certificate's key is not ECDSA P-384")
    _check_amd_name(cert.subject, f"the {role} certificate's subject", f"SEV-{role}")
    _check_critical(cert, role)
    for ext in cert.extensions:
        if isinstance(ext.value, x509.BasicConstraints) and ext.value.ca:
            raise ChainInvalid(f"the {role} certificate claims to be a CA")
        if isinstance(ext.value, x509.KeyUsage) and not ext.value.digital_signature:
            raise ChainInvalid(f"the {role} certificate's key usage forbids signing")
    return parse_endorsement_extensions(cert, kind, role)


# Every report of a machine comes with the same VCEK, ASK and ARK: what can be
# checked of them without the time (names, extensions, constraints, the RSA
# signatures) is checked once and remembered by their bytes. Validity against
# `now` is checked on every report. Failures are not remembered.
_CHAIN_CACHE_SIZE = 1024


def _intermediate_role(kind: SigningKey) -> str:
    return "ASK" if kind == SigningKey.VCEK else "ASVK"


@functools.lru_cache(maxsize=_CHAIN_CACHE_SIZE)
def _checked_leaf(
    leaf_der: bytes, kind: SigningKey
) -> tuple[x509.Certificate, EndorsementExtensions]:
    leaf = load_certificate(leaf_der, f"{kind.name} certificate")
    return leaf, _check_leaf(leaf, kind, kind.name)


@functools.lru_cache(maxsize=_CHAIN_CACHE_SIZE)
def _chain(
    leaf_der: bytes,
    kind: SigningKey,
    product: str,
    trusted: ProductRoots,
    table: CertTable,
) -> tuple[x509.Certificate, x509.Certificate]:
    """The ARK and ASK (or ASVK) the leaf chains to, every check but validity done."""
    leaf, _ = _checked_leaf(leaf_der, kind)
    role = kind.name
    ark = trusted.ark
    der = serialization.Encoding.DER
    if table.ark is not None:
        offered = load_certificate(table.ark, "ARK")
        if offered.public_bytes(der) != ark.public_bytes(der):
            raise ChainInvalid(
                f"the ARK in the report's certificate table ({offered.subject.rfc4514_string()}) "
                f"is not a trusted AMD root for {product}"
            )
    if kind == SigningKey.VCEK:
        ask_role, ask_name, bundled = "ASK", f"SEV-{product}", trusted.ask
    else:
        ask_role, ask_name, bundled = "ASVK", f"SEV-VLEK-{product}", trusted.asvk
    if table.ask is not None:
        ask = load_certificate(table.ask, ask_role)
    elif bundled is not None:
        ask = bundled
    else:
        raise ChainInvalid(f"no {ask_role} for {product}: none in the evidence nor the roots")

    # The trust anchor itself: self-signed and well formed (valid now: checked per report).
    _check_amd_name(ark.subject, "the ARK's subject", f"ARK-{product}")
    _check_signed_by(ark, "ARK", ark, "ARK")
    _check_critical(ark, "ARK")
    _check_ca(ark, "ARK", min_path=1)

    _check_amd_name(ask.subject, f"the {ask_role}'s subject", ask_name)
    _check_signed_by(ask, ask_role, ark, "ARK")
    _check_critical(ask, ask_role)
    _check_ca(ask, ask_role, min_path=0)

    _check_signed_by(leaf, role, ask, ask_role)
    return ark, ask


def _verify_report_signature(report: Report, leaf: x509.Certificate, role: str) -> None:
    key = leaf.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)  # checked in _check_leaf
    r, s = report.signature_ints()
    try:
        key.verify(encode_dss_signature(r, s), report.signed_bytes(), ec.ECDSA(hashes.SHA384()))
    except InvalidSignature as exc:
        raise SignatureInvalid(
            f"the report's signature does not verify with the {role} key"
        ) from exc


def _match_extensions(
    report: Report, ext: EndorsementExtensions, kind: SigningKey, role: str
) -> None:
    tcb = decode_tcb(report.reported_tcb, ext.product)
    reported: dict[str, int] = {"blSPL": tcb.bl, "teeSPL": tcb.tee, "snpSPL": tcb.snp}
    reported["ucodeSPL"] = tcb.microcode
    if tcb.fmc is not None:
        reported["fmcSPL"] = tcb.fmc
    first = 5 if ext.product == TURIN else 4
    for i, value in enumerate(tcb.reserved):
        reported[f"spl{first + i}"] = value
    for name, certified in ext.spls().items():
        if reported[name] != certified:
            raise ChainInvalid(
                f"the {role} certificate's {name} is {certified} but the report's REPORTED_TCB "
                f"has {reported[name]} ({tcb.describe()})"
            )
    if kind != SigningKey.VCEK or ext.hwid is None:
        return
    masked = report.signer.mask_chip_key and not any(report.chip_id)
    if masked:
        return  # MASK_CHIP_KEY: the firmware zeroed CHIP_ID; the signature still binds the chip
    size = len(ext.hwid)
    if report.chip_id[:size] != ext.hwid or any(report.chip_id[size:]):
        raise ChainInvalid(
            f"the {role} certificate's hwid {ext.hwid.hex()} does not match the report's "
            f"CHIP_ID {report.chip_id.hex()}"
        )


def tcb_claims(report: Report, product: str) -> dict[str, Any]:
    """The report's TCB values decoded for ``product``, and its firmware versions."""
    claims: dict[str, Any] = {"product": product}
    for name in ("current_tcb", "reported_tcb", "committed_tcb", "launch_tcb"):
        parts = decode_tcb(getattr(report, name), product)
        claims[name] = {"raw": parts.raw, **parts.as_dict()}
    claims["current_version"] = "{}.{}.{}".format(*report.current_version)
    claims["committed_version"] = "{}.{}.{}".format(*report.committed_version)
    return claims


def report_claims(report: Report, ext: EndorsementExtensions | None = None) -> dict[str, Any]:
    """The report's other fields, bytes as lower-case hex and numbers as ints."""
    claims: dict[str, Any] = {
        "version": report.version,
        "guest_svn": report.guest_svn,
        "policy": report.policy,
        "family_id": report.family_id.hex(),
        "image_id": report.image_id.hex(),
        "vmpl": report.vmpl,
        "platform_info": report.platform_info,
        "signing_key": report.signing_key.name,
        "author_key_en": report.signer.author_key_en,
        "mask_chip_key": report.signer.mask_chip_key,
        "host_data": report.host_data.hex(),
        "id_key_digest": report.id_key_digest.hex(),
        "author_key_digest": report.author_key_digest.hex(),
        "report_id": report.report_id.hex(),
        "report_id_ma": report.report_id_ma.hex(),
        "chip_id": report.chip_id.hex(),
    }
    if report.cpuid_fam_id is not None:
        claims["cpuid_fam_id"] = report.cpuid_fam_id
        claims["cpuid_mod_id"] = report.cpuid_mod_id
        claims["cpuid_step"] = report.cpuid_step
    if report.launch_mit_vector is not None:
        claims["launch_mit_vector"] = report.launch_mit_vector
        claims["current_mit_vector"] = report.current_mit_vector
    if ext is not None:
        claims["product_name"] = ext.product_name
        if ext.csp_id is not None:
            claims["csp_id"] = ext.csp_id
    return claims
