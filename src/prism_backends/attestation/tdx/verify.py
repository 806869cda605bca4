"""Verify an Intel TDX quote: signatures, the PCK chain and, optionally, Intel's
collateral. Pure: the trusted roots, the time, the collateral or a fetcher are
all passed in.

What :func:`verify` checks, in order:

1. the quote parses (:mod:`.abi`), strictly;
2. the PCK chain in the quote is three certificates, PCK -> PCK platform or
   processor CA -> root, with Intel's subject names, that
   :func:`~.chain.verify_chain` accepts at ``now`` against ``trusted_roots``;
3. the PCK certificate carries well-formed SGX extensions (FMSPC, PCE ID, TCB);
4. the quote signature (ECDSA P-256, SHA-256) over header + body verifies with
   the attestation key in the quote;
5. the QE report's signature verifies with the PCK certificate's key;
6. the QE report binds the attestation key: report_data[0:32] =
   SHA-256(attestation key || QE authentication data), report_data[32:64] = 0.

With collateral (given, or fetched through ``fetcher`` when given and no
collateral is), also the revocation and TCB checks of :mod:`.collateral`, whose
verdict is in :attr:`VerifiedTdx.tcb`.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from prism_backends.attestation.common import (
    ChainInvalid,
    Fetcher,
    MalformedEvidence,
    SignatureInvalid,
    Verified,
)
from prism_backends.attestation.tdx.abi import (
    BODY_TYPE_TDX_1_5,
    Quote,
    parse_quote,
    pem_certificates,
)
from prism_backends.attestation.tdx.chain import (
    X509_ERRORS,
    Same,
    common_name,
    ecdsa_ok,
    signed_by,
    verify_chain,
)
from prism_backends.attestation.tdx.collateral import TcbEvaluation, evaluate_collateral
from prism_backends.attestation.tdx.pck import PckExtensions, pck_extensions
from prism_backends.attestation.tdx.pcs import ROOT_CRL_URL, Collateral, fetch_collateral

PLATFORM = "tdx"
PCK_CERTIFICATE_CN = "Intel SGX PCK Certificate"
PCK_CA_CNS = {"Intel SGX PCK Platform CA": "platform", "Intel SGX PCK Processor CA": "processor"}


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
        ca, root_crl_url = _collateral_source(Same(chain[1]), Same(chain[-1]))
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
    if not ecdsa_ok(key, signed.signature, quote.signed_bytes()):
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
    if not signed_by(
        Same(pck_certificate), certification.qe_report_signature, certification.qe_report_raw
    ):
        raise SignatureInvalid("the QE report signature does not verify with the PCK key")
    digest = hashlib.sha256(quote.signed_data.attestation_key + certification.qe_auth_data).digest()
    report_data = certification.qe_report.report_data
    if report_data[:32] != digest or report_data[32:] != bytes(32):
        raise SignatureInvalid(
            "the QE report does not bind the attestation key: report_data is not"
            " SHA-256(attestation key || QE auth data) followed by zeros"
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
    except X509_ERRORS as exc:
        raise MalformedEvidence(f"a certificate in the PCK chain does not parse: {exc}") from exc


def _pck_extensions(certificate: x509.Certificate) -> PckExtensions:
    return _remembered_pck_extensions(Same(certificate))


@functools.lru_cache(maxsize=1024)
def _remembered_pck_extensions(certificate: Same[x509.Certificate]) -> PckExtensions:
    """The SGX extensions of a PCK certificate, parsed once per certificate (a
    malformed one raises, and is parsed again next time)."""
    return pck_extensions(certificate.value)


@functools.lru_cache(maxsize=1024)
def _collateral_source(ca: Same[x509.Certificate], root: Same[x509.Certificate]) -> tuple[str, str]:
    """The PCK CA's kind (``platform`` or ``processor``) and the root CRL's URL,
    read from the certificates' names and extensions once per chain."""
    return PCK_CA_CNS[common_name(ca.value)], _crl_url(root.value)


def _crl_url(root: x509.Certificate) -> str:
    try:
        points = root.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except (x509.ExtensionNotFound, *X509_ERRORS):
        return ROOT_CRL_URL
    for point in points:
        for name in point.full_name or ():
            if isinstance(name, x509.UniformResourceIdentifier) and name.value.startswith(
                "https://"
            ):
                return name.value
    return ROOT_CRL_URL


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
