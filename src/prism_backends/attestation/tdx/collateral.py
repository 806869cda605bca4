"""Check Intel's collateral for a TDX quote whose PCK chain verified: CRLs, TCB
info and QE identity. Pure: the collateral, the trusted roots and the time are
passed in (:func:`~.pcs.fetch_collateral` gets the collateral through a
fetcher).

What :func:`evaluate_collateral` checks, in order:

1. the root CA CRL (signed by the root, current at ``now``) does not revoke
   the PCK CA, and the PCK CRL (signed by the PCK CA, current) does not revoke
   the PCK certificate;
2. TCB info and QE identity are signed by an "Intel SGX TCB Signing"
   certificate whose chain reaches a trusted root at ``now`` and which the root
   CRL does not revoke; they are TDX TCB info v3 / TD_QE identity v2, not past
   their next update, and the TCB info is for the PCK's FMSPC and PCE ID;
3. the QE report matches the QE identity (MRSIGNER, ISVPRODID, MISCSELECT and
   ATTRIBUTES under their masks) and its ISV SVN selects a QE TCB level;
4. the TD's TDX module matches TCB info (MRSIGNERSEAM, SEAM attributes under
   the mask; for module versions > 0, the ``TDX_<version>`` identity and its
   TCB level by the module's SVN);
5. the platform's TCB level: the first level whose SGX components and PCESVN
   (from the PCK) and TDX components (TEE_TCB_SVN, from index 2 when the
   module version is > 0) are all at least the level's.

The TCB status is reported, not judged: a ``Revoked`` level raises
:class:`ChainInvalid`; every other status (``UpToDate``, ``OutOfDate``,
``SWHardeningNeeded``, ..., or ``TcbNotSupported`` when no level matches) is in
the :class:`TcbEvaluation` for the caller's policy to judge.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from prism_backends.attestation.common import (
    ChainInvalid,
    CollateralUnavailable,
    MalformedEvidence,
    SignatureInvalid,
)
from prism_backends.attestation.tdx.abi import (
    EnclaveReport,
    Quote,
    TdQuoteBody,
    pem_certificates,
)
from prism_backends.attestation.tdx.chain import (
    X509_ERRORS,
    Same,
    common_name,
    signed_by,
    verify_chain,
)
from prism_backends.attestation.tdx.pck import PckExtensions
from prism_backends.attestation.tdx.pcs import (
    Collateral,
    EnclaveTcbLevel,
    QeIdentity,
    SignedJson,
    TcbInfo,
    TcbLevel,
    issuer_chain_pem,
    parse_qe_identity,
    parse_tcb_info,
    split_signed_json,
)

TCB_SIGNING_CN = "Intel SGX TCB Signing"
TCB_INFO_ID = "TDX"
TCB_INFO_VERSION = 3
QE_IDENTITY_ID = "TD_QE"
QE_IDENTITY_VERSION = 2
TCB_NOT_SUPPORTED = "TcbNotSupported"


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


def evaluate_collateral(
    quote: Quote,
    chain: Sequence[x509.Certificate],
    pck: PckExtensions,
    collateral: Collateral,
    trusted_roots: Sequence[x509.Certificate],
    now: datetime,
) -> TcbEvaluation:
    """The checks of the module docstring, on a quote whose PCK chain verified."""
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


def _current_crl(
    data: bytes, issuer: x509.Certificate, now: datetime, what: str
) -> x509.CertificateRevocationList:
    crl, next_update, last_update = _signed_crl(data, Same(issuer), what)
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
    data: bytes, issuer: Same[x509.Certificate], what: str
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
    except X509_ERRORS as exc:
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
            f"{common_name(certificate)!r} (serial {certificate.serial_number:x})"
            f" is revoked by the {what}"
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
    if not _issued_by(Same(root_crl), Same(chain[-1])):
        raise CollateralUnavailable(f"the root CA CRL does not cover the {what} signing chain")
    for certificate in chain[:-1]:
        _not_revoked(certificate, root_crl, "root CA CRL")
    if not signed_by(Same(chain[0]), signed.signature, signed.signed_bytes):
        raise SignatureInvalid(f"the {what} signature does not verify")


@functools.lru_cache(maxsize=256)
def _issued_by(
    crl: Same[x509.CertificateRevocationList], certificate: Same[x509.Certificate]
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
    except (MalformedEvidence, *X509_ERRORS) as exc:
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
