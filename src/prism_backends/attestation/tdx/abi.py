"""Intel TDX quotes (versions 4 and 5), parsed from bytes, strictly.

Layout (all integers little-endian), after Intel's ``sgx_quote_4.h`` /
``sgx_quote_5.h`` and the "Intel TDX DCAP Quoting Library API" appendix:

- header, 48 bytes: version u16, attestation key type u16 (2 = ECDSA-256 with
  P-256), TEE type u32 (0x81 = TDX), QE SVN u16, PCE SVN u16, QE vendor ID
  (16), user data (20);
- v5 only: TD body type u16 (2 = TDX 1.0, 3 = TDX 1.5) and body size u32;
- the TD quote body (584 bytes, or 648 for TDX 1.5 which appends
  TEE_TCB_SVN2 and MRSERVICETD);
- signed data size u32, then the signed data: signature (r || s, 64 bytes,
  big-endian) over header [+ type and size] + body, attestation key (X || Y,
  64 bytes), certification data of type 6 (QE report certification data):
  the QE report (an SGX report body, 384 bytes), its signature (64), the QE
  authentication data (u16 size + bytes) and nested certification data of
  type 5 (the PEM chain PCK certificate -> PCK platform/processor CA -> root).

Every size is checked; an unknown version, key type, TEE type, body type or
certification data type is refused with :class:`MalformedEvidence` naming the
field. Bytes after the signed data (a quote buffer's padding) are kept in
``extra_bytes``: they are covered by nothing and never used.

Note: the QE SVN / PCE SVN order follows Intel's header (QE SVN at offset 8,
PCE SVN at offset 10); go-tdx-guest reads them the other way round.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import struct
from dataclasses import dataclass

from prism_backends.attestation.common import MalformedEvidence

QUOTE_VERSION_4 = 4
QUOTE_VERSION_5 = 5
ATTESTATION_KEY_TYPE_ECDSA_P256 = 2
TEE_TYPE_TDX = 0x81
BODY_TYPE_TDX_1_0 = 2
BODY_TYPE_TDX_1_5 = 3
CERT_DATA_QE_REPORT = 6
CERT_DATA_PCK_CHAIN = 5

HEADER_SIZE = 48
BODY_SIZE_TDX_1_0 = 584
BODY_SIZE_TDX_1_5 = 648
BODY_DESCRIPTOR_SIZE = 6
SIGNATURE_SIZE = 64
ATTESTATION_KEY_SIZE = 64
QE_REPORT_SIZE = 384
MEASUREMENT_SIZE = 48
RTMR_COUNT = 4

_BODY_SIZES = {BODY_TYPE_TDX_1_0: BODY_SIZE_TDX_1_0, BODY_TYPE_TDX_1_5: BODY_SIZE_TDX_1_5}
_PEM_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n([A-Za-z0-9+/=\r\n]+?)-----END ([A-Z0-9 ]+)-----"
)


@dataclass(frozen=True)
class Header:
    """The quote header (48 bytes)."""

    version: int
    attestation_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes  # 16
    user_data: bytes  # 20


@dataclass(frozen=True)
class TdQuoteBody:
    """The TD report body the quote signs (TDX 1.0 fields, plus TDX 1.5's two)."""

    tee_tcb_svn: bytes  # 16
    mr_seam: bytes  # 48
    mr_signer_seam: bytes  # 48
    seam_attributes: bytes  # 8
    td_attributes: bytes  # 8
    xfam: bytes  # 8
    mr_td: bytes  # 48
    mr_config_id: bytes  # 48
    mr_owner: bytes  # 48
    mr_owner_config: bytes  # 48
    rtmrs: tuple[bytes, bytes, bytes, bytes]  # 4 x 48
    report_data: bytes  # 64
    tee_tcb_svn2: bytes | None = None  # 16, TDX 1.5 only
    mr_service_td: bytes | None = None  # 48, TDX 1.5 only


@dataclass(frozen=True)
class EnclaveReport:
    """An SGX report body (384 bytes): here, the Quoting Enclave's report."""

    cpu_svn: bytes  # 16
    misc_select: int
    isv_ext_prod_id: bytes  # 16
    attributes: bytes  # 16
    mr_enclave: bytes  # 32
    mr_signer: bytes  # 32
    config_id: bytes  # 64
    isv_prod_id: int
    isv_svn: int
    config_svn: int
    isv_family_id: bytes  # 16
    report_data: bytes  # 64


@dataclass(frozen=True)
class QeCertificationData:
    """Certification data type 6: the QE report, its signature by the PCK key,
    the QE authentication data and the PCK certificate chain (type 5, PEM)."""

    qe_report: EnclaveReport
    qe_report_raw: bytes  # the 384 signed bytes
    qe_report_signature: bytes  # r || s
    qe_auth_data: bytes
    pck_chain_pem: bytes

    def pck_chain_der(self) -> list[bytes]:
        """The PCK chain's certificates as DER, leaf first (PEM decoded strictly:
        only CERTIFICATE blocks, whitespace between them, optional trailing NULs)."""
        return pem_certificates(self.pck_chain_pem, what="PCK certificate chain")


@dataclass(frozen=True)
class SignedData:
    """The ECDSA-256 quote signature data."""

    signature: bytes  # r || s, 64
    attestation_key: bytes  # X || Y, 64
    certification: QeCertificationData


@dataclass(frozen=True)
class Quote:
    """A parsed TDX quote (v4 or v5) and the exact bytes its signature covers."""

    header: Header
    body_type: int  # 2 (TDX 1.0) for every v4 quote
    body: TdQuoteBody
    signed_data: SignedData
    extra_bytes: bytes
    raw_signed: bytes

    @property
    def version(self) -> int:
        """The quote format version (4 or 5)."""
        return self.header.version

    def signed_bytes(self) -> bytes:
        """Header + (v5: body type and size) + body: what the attestation key signs."""
        return self.raw_signed


def parse_quote(raw: bytes) -> Quote:
    """Parse a TDX quote v4 or v5; raise :class:`MalformedEvidence` naming what is wrong."""
    data = bytes(raw)
    if len(data) < HEADER_SIZE:
        raise MalformedEvidence(
            f"quote is {len(data)} bytes, shorter than its {HEADER_SIZE}-byte header"
        )
    header = _parse_header(data[:HEADER_SIZE])
    offset = HEADER_SIZE
    if header.version == QUOTE_VERSION_4:
        body_type, body_size = BODY_TYPE_TDX_1_0, BODY_SIZE_TDX_1_0
    else:
        _need(data, offset, BODY_DESCRIPTOR_SIZE, "v5 body type and size")
        body_type, body_size = struct.unpack_from("<HI", data, offset)
        if body_type not in _BODY_SIZES:
            raise MalformedEvidence(
                f"quote body type {body_type} is not a TD report body (2 = TDX 1.0, 3 = TDX 1.5)"
            )
        if body_size != _BODY_SIZES[body_type]:
            raise MalformedEvidence(
                f"quote body size {body_size} is wrong for body type {body_type}"
                f" (expected {_BODY_SIZES[body_type]})"
            )
        offset += BODY_DESCRIPTOR_SIZE
    _need(data, offset, body_size, "TD quote body")
    body = _parse_body(data[offset : offset + body_size], body_type)
    offset += body_size
    raw_signed = data[:offset]

    _need(data, offset, 4, "signed data size")
    (signed_size,) = struct.unpack_from("<I", data, offset)
    offset += 4
    _need(data, offset, signed_size, "signed data")
    signed = _parse_signed_data(data[offset : offset + signed_size])
    offset += signed_size
    return Quote(
        header=header,
        body_type=body_type,
        body=body,
        signed_data=signed,
        extra_bytes=data[offset:],
        raw_signed=raw_signed,
    )


def parse_enclave_report(raw: bytes) -> EnclaveReport:
    """Parse a 384-byte SGX report body (the QE report)."""
    if len(raw) != QE_REPORT_SIZE:
        raise MalformedEvidence(f"QE report is {len(raw)} bytes, expected {QE_REPORT_SIZE}")
    (misc_select,) = struct.unpack_from("<I", raw, 0x10)
    isv_prod_id, isv_svn, config_svn = struct.unpack_from("<HHH", raw, 0x100)
    return EnclaveReport(
        cpu_svn=raw[0x00:0x10],
        misc_select=misc_select,
        isv_ext_prod_id=raw[0x20:0x30],
        attributes=raw[0x30:0x40],
        mr_enclave=raw[0x40:0x60],
        mr_signer=raw[0x80:0xA0],
        config_id=raw[0xC0:0x100],
        isv_prod_id=isv_prod_id,
        isv_svn=isv_svn,
        config_svn=config_svn,
        isv_family_id=raw[0x130:0x140],
        report_data=raw[0x140:0x180],
    )


def pem_certificates(data: bytes, *, what: str) -> list[bytes]:
    """Decode a concatenation of PEM CERTIFICATE blocks to DER, strictly: nothing
    but whitespace may surround the blocks, except trailing NUL bytes (Intel's
    quoting library NUL-terminates the chain)."""
    text = data.rstrip(b"\x00")
    ders: list[bytes] = []
    position = 0
    for match in _PEM_BLOCK.finditer(text):
        if text[position : match.start()].strip():
            raise MalformedEvidence(f"{what}: unexpected bytes between PEM blocks")
        if match.group(1) != b"CERTIFICATE" or match.group(3) != b"CERTIFICATE":
            raise MalformedEvidence(f"{what}: PEM block is not a CERTIFICATE")
        try:
            ders.append(base64.b64decode(b"".join(match.group(2).split()), validate=True))
        except binascii.Error as exc:
            raise MalformedEvidence(f"{what}: bad base64 in a PEM block") from exc
        position = match.end()
    if text[position:].strip():
        raise MalformedEvidence(f"{what}: unexpected bytes after the PEM blocks")
    if not ders:
        raise MalformedEvidence(f"{what}: no certificate")
    return ders


def _need(data: bytes, offset: int, size: int, what: str) -> None:
    if len(data) - offset < size:
        raise MalformedEvidence(
            f"quote truncated in the {what}: needs {size} bytes at offset {offset},"
            f" {max(len(data) - offset, 0)} left"
        )


def _parse_header(raw: bytes) -> Header:
    version, key_type, tee_type, qe_svn, pce_svn = struct.unpack_from("<HHIHH", raw, 0)
    if version not in (QUOTE_VERSION_4, QUOTE_VERSION_5):
        raise MalformedEvidence(f"quote version {version} is not supported (4 or 5)")
    if key_type != ATTESTATION_KEY_TYPE_ECDSA_P256:
        raise MalformedEvidence(
            f"attestation key type {key_type} is not supported (2 = ECDSA-256 with P-256)"
        )
    if tee_type != TEE_TYPE_TDX:
        raise MalformedEvidence(f"TEE type {tee_type:#x} is not TDX (0x81)")
    return Header(
        version=version,
        attestation_key_type=key_type,
        tee_type=tee_type,
        qe_svn=qe_svn,
        pce_svn=pce_svn,
        qe_vendor_id=raw[12:28],
        user_data=raw[28:48],
    )


# The TD quote body's fields, back to back, in one unpack rather than a
# slice each (this runs for every quote): tee_tcb_svn (0x00), mr_seam,
# mr_signer_seam, seam_attributes, td_attributes, xfam, mr_td, mr_config_id,
# mr_owner, mr_owner_config, rtmr0-3 (0x148), report_data (0x208-0x248); then
# TDX 1.5's tee_tcb_svn2 and mr_service_td (0x248-0x288).
_BODY_1_0 = struct.Struct("<16s48s48s8s8s8s48s48s48s48s48s48s48s48s64s")
_BODY_1_5_TAIL = struct.Struct("<16s48s")


def _parse_body(raw: bytes, body_type: int) -> TdQuoteBody:
    (
        tee_tcb_svn,
        mr_seam,
        mr_signer_seam,
        seam_attributes,
        td_attributes,
        xfam,
        mr_td,
        mr_config_id,
        mr_owner,
        mr_owner_config,
        rtmr0,
        rtmr1,
        rtmr2,
        rtmr3,
        report_data,
    ) = _BODY_1_0.unpack_from(raw)
    tee_tcb_svn2 = mr_service_td = None
    if body_type == BODY_TYPE_TDX_1_5:
        tee_tcb_svn2, mr_service_td = _BODY_1_5_TAIL.unpack_from(raw, _BODY_1_0.size)
    return TdQuoteBody(
        tee_tcb_svn=tee_tcb_svn,
        mr_seam=mr_seam,
        mr_signer_seam=mr_signer_seam,
        seam_attributes=seam_attributes,
        td_attributes=td_attributes,
        xfam=xfam,
        mr_td=mr_td,
        mr_config_id=mr_config_id,
        mr_owner=mr_owner,
        mr_owner_config=mr_owner_config,
        rtmrs=(rtmr0, rtmr1, rtmr2, rtmr3),
        report_data=report_data,
        tee_tcb_svn2=tee_tcb_svn2,
        mr_service_td=mr_service_td,
    )


def _parse_signed_data(raw: bytes) -> SignedData:
    fixed = SIGNATURE_SIZE + ATTESTATION_KEY_SIZE + 6
    if len(raw) < fixed:
        raise MalformedEvidence(f"signed data is {len(raw)} bytes, needs at least {fixed}")
    signature = raw[:SIGNATURE_SIZE]
    key = raw[SIGNATURE_SIZE : SIGNATURE_SIZE + ATTESTATION_KEY_SIZE]
    offset = SIGNATURE_SIZE + ATTESTATION_KEY_SIZE
    cert_type, cert_size = struct.unpack_from("<HI", raw, offset)
    offset += 6
    if cert_type != CERT_DATA_QE_REPORT:
        raise MalformedEvidence(
            f"certification data type {cert_type} is not supported"
            f" (6 = QE report certification data)"
        )
    if cert_size != len(raw) - offset:
        raise MalformedEvidence(
            f"certification data size {cert_size} disagrees with the"
            f" {len(raw) - offset} bytes left in the signed data"
        )
    return SignedData(
        signature=signature,
        attestation_key=key,
        certification=_parse_qe_certification(raw[offset:]),
    )


# A quoting enclave sends the same certification data (its report, the
# report's signature, its authentication data and the PCK chain) with every
# quote until it restarts: parsed once per exact bytes. The result is frozen,
# so sharing it is safe; malformed data raises and is not remembered.
@functools.lru_cache(maxsize=1024)
def _parse_qe_certification(raw: bytes) -> QeCertificationData:
    fixed = QE_REPORT_SIZE + SIGNATURE_SIZE + 2
    if len(raw) < fixed:
        raise MalformedEvidence(
            f"QE report certification data is {len(raw)} bytes, needs at least {fixed}"
        )
    report_raw = raw[:QE_REPORT_SIZE]
    signature = raw[QE_REPORT_SIZE : QE_REPORT_SIZE + SIGNATURE_SIZE]
    offset = QE_REPORT_SIZE + SIGNATURE_SIZE
    (auth_size,) = struct.unpack_from("<H", raw, offset)
    offset += 2
    if len(raw) - offset < auth_size:
        raise MalformedEvidence(
            f"QE authentication data size {auth_size} exceeds the {len(raw) - offset} bytes left"
        )
    auth_data = raw[offset : offset + auth_size]
    offset += auth_size
    if len(raw) - offset < 6:
        raise MalformedEvidence("QE report certification data lacks the nested PCK chain data")
    chain_type, chain_size = struct.unpack_from("<HI", raw, offset)
    offset += 6
    if chain_type != CERT_DATA_PCK_CHAIN:
        raise MalformedEvidence(
            f"nested certification data type {chain_type} is not supported"
            f" (5 = PCK certificate chain)"
        )
    if chain_size != len(raw) - offset:
        raise MalformedEvidence(
            f"PCK certificate chain size {chain_size} disagrees with the"
            f" {len(raw) - offset} bytes left"
        )
    return QeCertificationData(
        qe_report=parse_enclave_report(report_raw),
        qe_report_raw=report_raw,
        qe_report_signature=signature,
        qe_auth_data=auth_data,
        pck_chain_pem=raw[offset:],
    )
