"""Test-only: an Intel-shaped PKI and a TDX quote signer.

Generates a root CA, a PCK platform CA, a PCK certificate carrying SGX
extensions (FMSPC, PCE ID, TCB) and an "Intel SGX TCB Signing" certificate,
all with fresh P-256 keys, and signs quotes (v4, v5 with TDX 1.0 or 1.5
bodies) whose fields the test chooses: the QE report is signed by the PCK key
and binds the attestation key unless told not to. It also makes collateral
(TCB info, QE identity, CRLs) signed by this PKI. Nothing here is trusted by
the code under test unless a test passes ``pki.root.cert`` as a trusted root.
"""

from __future__ import annotations

import hashlib
import json
import struct
import urllib.parse
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from prism_backends.attestation.tdx.pcs import Collateral

NOW = datetime(2030, 1, 1, tzinfo=UTC)
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
INTEL_TD_QE_MRSIGNER = bytes.fromhex(
    "dc9e2a7c6f948f17474e34a7fc43ed030f7c1563f1babddf6340c82e0e54a8c5"
)
SGX_EXTENSIONS_OID = "1.2.840.113741.1.13.1"
ROOT_CN = "Intel SGX Root CA"
PLATFORM_CA_CN = "Intel SGX PCK Platform CA"
PCK_CN = "Intel SGX PCK Certificate"
TCB_SIGNING_CN = "Intel SGX TCB Signing"


@dataclass(frozen=True)
class Issued:
    """A key and its certificate."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class PckTcb:
    """What the PCK certificate's SGX extensions say."""

    components: tuple[int, ...] = (4, 4, 2, 2, 4, 1, 0, 5) + (0,) * 8
    pce_svn: int = 13
    fmspc: bytes = bytes.fromhex("90c06f000000")
    pce_id: bytes = b"\x00\x00"
    ppid: bytes = bytes(range(16))
    sgx_type: int = 1


@dataclass(frozen=True)
class Pki:
    """An Intel-shaped PKI: root -> PCK CA -> PCK, and root -> TCB signing."""

    root: Issued
    ca: Issued
    pck: Issued
    tcb_signing: Issued

    def chain_pem(self) -> bytes:
        """The PCK chain as a quote carries it (NUL-terminated like Intel's)."""
        return self.pck.pem() + self.ca.pem() + self.root.pem() + b"\x00"

    def tcb_signing_chain(self, *, url_encoded: bool = True) -> bytes:
        """The TCB signing chain as PCS sends it in a response header."""
        pem = self.tcb_signing.pem() + self.root.pem()
        return urllib.parse.quote(pem).encode() if url_encoded else pem


def name(cn: str, organization: str = "Intel Corporation") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Santa Clara"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def issue(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: Issued | None,
    *,
    ca: bool,
    path_length: int | None = None,
    not_before: datetime = NOW - timedelta(days=30),
    not_after: datetime = NOW + timedelta(days=365),
    extensions: list[x509.ExtensionType] | None = None,
    signature_hash: hashes.SHA256 | hashes.SHA384 | None = None,
) -> Issued:
    """A certificate shaped like Intel's (AKI, SKI, CRL DP, critical KU and BC)."""
    signer_key = issuer.key if issuer else key
    issuer_name = issuer.cert.subject if issuer else subject
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        [x509.UniformResourceIdentifier("https://crl.invalid/test.der")],
                        None,
                        None,
                        None,
                    )
                ]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=not ca,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
    )
    for extension in extensions or []:
        builder = builder.add_extension(extension, critical=False)
    cert = builder.sign(signer_key, signature_hash or hashes.SHA256())
    return Issued(key, cert)


def make_root(cn: str = ROOT_CN) -> Issued:
    return issue(
        name(cn),
        new_key(),
        None,
        ca=True,
        path_length=1,
        not_before=NOW - timedelta(days=3650),
        not_after=NOW + timedelta(days=3650),
    )


def make_pki(
    *,
    root: Issued | None = None,
    tcb: PckTcb | None = None,
    ca_cn: str = PLATFORM_CA_CN,
    pck_cn: str = PCK_CN,
    pck_not_before: datetime = NOW - timedelta(days=30),
    pck_not_after: datetime = NOW + timedelta(days=365),
    sgx_extension: bool = True,
) -> Pki:
    """A fresh PKI (reusing ``root`` when given)."""
    root = root or make_root()
    ca = issue(name(ca_cn), new_key(), root, ca=True, path_length=0)
    extensions: list[x509.ExtensionType] = []
    if sgx_extension:
        extensions.append(
            x509.UnrecognizedExtension(
                x509.ObjectIdentifier(SGX_EXTENSIONS_OID), sgx_extensions_der(tcb or PckTcb())
            )
        )
    pck = issue(
        name(pck_cn),
        new_key(),
        ca,
        ca=False,
        not_before=pck_not_before,
        not_after=pck_not_after,
        extensions=extensions,
    )
    signing = issue(name(TCB_SIGNING_CN), new_key(), root, ca=False)
    return Pki(root=root, ca=ca, pck=pck, tcb_signing=signing)


# --- DER for the SGX extensions ------------------------------------------------


def _der(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    size = (length.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + length.to_bytes(size, "big") + content


def _oid(dotted: str) -> bytes:
    arcs = [int(part) for part in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return _der(0x06, bytes(body))


def _int(value: int, tag: int = 0x02) -> bytes:
    size = max(1, (value.bit_length() + 8) // 8)
    return _der(tag, value.to_bytes(size, "big", signed=True))


def _pair(oid: str, value: bytes) -> bytes:
    return _der(0x30, _oid(oid) + value)


def sgx_extensions_der(tcb: PckTcb) -> bytes:
    """The SGX extensions value, in Intel's layout."""
    base = SGX_EXTENSIONS_OID
    components = b"".join(
        _pair(f"{base}.2.{index + 1}", _int(svn)) for index, svn in enumerate(tcb.components)
    )
    tcb_seq = (
        components
        + _pair(f"{base}.2.17", _int(tcb.pce_svn))
        + _pair(f"{base}.2.18", _der(0x04, bytes(tcb.components)))
    )
    return _der(
        0x30,
        _pair(f"{base}.1", _der(0x04, tcb.ppid))
        + _pair(f"{base}.2", _der(0x30, tcb_seq))
        + _pair(f"{base}.3", _der(0x04, tcb.pce_id))
        + _pair(f"{base}.4", _der(0x04, tcb.fmspc))
        + _pair(f"{base}.5", _int(tcb.sgx_type, tag=0x0A)),
    )


# --- quotes ---------------------------------------------------------------------


@dataclass(frozen=True)
class QuoteFields:
    """Every field a test may choose; defaults are plausible TDX values."""

    version: int = 4
    body_type: int = 2  # v5 only: 2 = TDX 1.0, 3 = TDX 1.5
    attestation_key_type: int = 2
    tee_type: int = 0x81
    qe_svn: int = 0
    pce_svn: int = 0
    qe_vendor_id: bytes = INTEL_QE_VENDOR_ID
    user_data: bytes = bytes(20)
    tee_tcb_svn: bytes = bytes([3, 0, 5]) + bytes(13)
    mr_seam: bytes = bytes([0x5E]) * 48
    mr_signer_seam: bytes = bytes(48)
    seam_attributes: bytes = bytes(8)
    td_attributes: bytes = bytes.fromhex("0000001000000000")
    xfam: bytes = bytes.fromhex("e702060000000000")
    mr_td: bytes = bytes([0x7D]) * 48
    mr_config_id: bytes = bytes([0xC0]) * 48
    mr_owner: bytes = bytes([0x0E]) * 48
    mr_owner_config: bytes = bytes([0x0C]) * 48
    rtmrs: tuple[bytes, bytes, bytes, bytes] = (
        bytes([0xA0]) * 48,
        bytes([0xA1]) * 48,
        bytes([0xA2]) * 48,
        bytes([0xA3]) * 48,
    )
    report_data: bytes = bytes(range(64))
    tee_tcb_svn2: bytes = bytes([3, 0, 5]) + bytes(13)
    mr_service_td: bytes = bytes([0x5D]) * 48
    qe_cpu_svn: bytes = bytes([4, 4, 2, 2, 4, 0xFF, 0, 5]) + bytes(8)
    qe_misc_select: int = 0
    qe_attributes: bytes = bytes.fromhex("1500000000000000e700000000000000")
    qe_mr_enclave: bytes = bytes([0xEE]) * 32
    qe_mr_signer: bytes = INTEL_TD_QE_MRSIGNER
    qe_isv_prod_id: int = 2
    qe_isv_svn: int = 4
    qe_auth_data: bytes = bytes(range(32))
    bind_attestation_key: bool = True
    qe_report_data_tail: bytes = bytes(32)  # must be zero in a well-formed QE report

    def but(self, **changes: Any) -> QuoteFields:
        return replace(self, **changes)


def signature_bytes(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    """ECDSA P-256 SHA-256 as Intel encodes it: r || s, 32 bytes each."""
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def public_xy(key: ec.EllipticCurvePrivateKey) -> bytes:
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return point[1:]


def td_body(f: QuoteFields, body_type: int = 2) -> bytes:
    body = (
        f.tee_tcb_svn
        + f.mr_seam
        + f.mr_signer_seam
        + f.seam_attributes
        + f.td_attributes
        + f.xfam
        + f.mr_td
        + f.mr_config_id
        + f.mr_owner
        + f.mr_owner_config
        + b"".join(f.rtmrs)
        + f.report_data
    )
    if body_type == 3:
        body += f.tee_tcb_svn2 + f.mr_service_td
    return body


def qe_report(f: QuoteFields, report_data: bytes) -> bytes:
    report = (
        f.qe_cpu_svn
        + struct.pack("<I", f.qe_misc_select)
        + bytes(12)
        + bytes(16)  # ISV extended product ID
        + f.qe_attributes
        + f.qe_mr_enclave
        + bytes(32)
        + f.qe_mr_signer
        + bytes(32)
        + bytes(64)  # CONFIGID
        + struct.pack("<HHH", f.qe_isv_prod_id, f.qe_isv_svn, 0)
        + bytes(42)
        + bytes(16)  # ISV family ID
        + report_data
    )
    assert len(report) == 384
    return report


def sign_quote(
    pki: Pki,
    fields: QuoteFields | None = None,
    *,
    attestation_key: ec.EllipticCurvePrivateKey | None = None,
    qe_signing_key: ec.EllipticCurvePrivateKey | None = None,
    chain_pem: bytes | None = None,
) -> bytes:
    """A quote with ``fields``, signed by a fresh attestation key whose QE report
    the PCK key signs (or ``qe_signing_key``), carrying ``pki``'s chain."""
    f = fields or QuoteFields()
    ak = attestation_key or new_key()
    header = (
        struct.pack("<HHIHH", f.version, f.attestation_key_type, f.tee_type, f.qe_svn, f.pce_svn)
        + f.qe_vendor_id
        + f.user_data
    )
    if f.version == 5:
        body = td_body(f, f.body_type)
        signed = header + struct.pack("<HI", f.body_type, len(body)) + body
    else:
        signed = header + td_body(f)
    ak_xy = public_xy(ak)
    binding = hashlib.sha256(ak_xy + f.qe_auth_data).digest()
    if not f.bind_attestation_key:
        binding = hashlib.sha256(public_xy(new_key()) + f.qe_auth_data).digest()
    report = qe_report(f, binding + f.qe_report_data_tail)
    chain = pki.chain_pem() if chain_pem is None else chain_pem
    qe_data = (
        report
        + signature_bytes(qe_signing_key or pki.pck.key, report)
        + struct.pack("<H", len(f.qe_auth_data))
        + f.qe_auth_data
        + struct.pack("<HI", 5, len(chain))
        + chain
    )
    signed_data = (
        signature_bytes(ak, signed) + ak_xy + struct.pack("<HI", 6, len(qe_data)) + qe_data
    )
    return signed + struct.pack("<I", len(signed_data)) + signed_data


# --- collateral -------------------------------------------------------------------


def signed_json(signer: Issued, key: str, value: dict[str, Any]) -> bytes:
    """A PCS-style body: the value's bytes as signed, then the hex signature."""
    raw = json.dumps(value, separators=(",", ":")).encode()
    signature = signature_bytes(signer.key, raw).hex()
    return b'{"' + key.encode() + b'":' + raw + b',"signature":"' + signature.encode() + b'"}'


def _date(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def components(svns: tuple[int, ...] | list[int]) -> list[dict[str, Any]]:
    return [{"svn": svn} for svn in svns]


def tcb_level(
    status: str,
    *,
    sgx: tuple[int, ...] = PckTcb().components,
    pce_svn: int = 13,
    tdx: tuple[int, ...] = (3, 0, 5) + (0,) * 13,
    date: str = "2029-01-01T00:00:00Z",
    advisories: tuple[str, ...] = (),
) -> dict[str, Any]:
    level: dict[str, Any] = {
        "tcb": {
            "sgxtcbcomponents": components(sgx),
            "pcesvn": pce_svn,
            "tdxtcbcomponents": components(tdx),
        },
        "tcbDate": date,
        "tcbStatus": status,
    }
    if advisories:
        level["advisoryIDs"] = list(advisories)
    return level


def default_tcb_levels() -> list[dict[str, Any]]:
    return [
        tcb_level("UpToDate"),
        tcb_level(
            "OutOfDate",
            tdx=(3, 0, 3) + (0,) * 13,
            date="2028-01-01T00:00:00Z",
            advisories=("INTEL-SA-00001",),
        ),
    ]


def enclave_level(isv_svn: int, status: str, date: str = "2029-01-01T00:00:00Z") -> dict[str, Any]:
    return {"tcb": {"isvsvn": isv_svn}, "tcbDate": date, "tcbStatus": status}


@dataclass(frozen=True)
class CollateralSpec:
    """What the test collateral says; defaults fit a default quote and PKI."""

    fmspc: bytes = PckTcb().fmspc
    pce_id: bytes = PckTcb().pce_id
    tcb_levels: list[dict[str, Any]] = field(default_factory=default_tcb_levels)
    tdx_module: dict[str, str] = field(
        default_factory=lambda: {
            "mrsigner": "00" * 48,
            "attributes": "0000000000000000",
            "attributesMask": "FFFFFFFFFFFFFFFF",
        }
    )
    tdx_module_identities: list[dict[str, Any]] | None = None
    tcb_info_id: str = "TDX"
    tcb_info_version: int = 3
    qe_identity_id: str = "TD_QE"
    qe_levels: list[dict[str, Any]] = field(
        default_factory=lambda: [enclave_level(4, "UpToDate"), enclave_level(2, "OutOfDate")]
    )
    qe_mrsigner: bytes = INTEL_TD_QE_MRSIGNER
    qe_isv_prod_id: int = 2
    issue_date: datetime = NOW - timedelta(days=1)
    next_update: datetime = NOW + timedelta(days=29)
    revoked_pck: bool = False
    revoked_ca: bool = False
    crl_next_update: datetime = NOW + timedelta(days=29)
    url_encoded_chains: bool = True


def tcb_info_value(spec: CollateralSpec) -> dict[str, Any]:
    value: dict[str, Any] = {
        "id": spec.tcb_info_id,
        "version": spec.tcb_info_version,
        "issueDate": _date(spec.issue_date),
        "nextUpdate": _date(spec.next_update),
        "fmspc": spec.fmspc.hex(),
        "pceId": spec.pce_id.hex(),
        "tcbType": 0,
        "tcbEvaluationDataNumber": 17,
        "tdxModule": spec.tdx_module,
        "tcbLevels": spec.tcb_levels,
    }
    if spec.tdx_module_identities is not None:
        value["tdxModuleIdentities"] = spec.tdx_module_identities
    return value


def qe_identity_value(spec: CollateralSpec) -> dict[str, Any]:
    return {
        "id": spec.qe_identity_id,
        "version": 2,
        "issueDate": _date(spec.issue_date),
        "nextUpdate": _date(spec.next_update),
        "tcbEvaluationDataNumber": 16,
        "miscselect": "00000000",
        "miscselectMask": "FFFFFFFF",
        "attributes": "11000000000000000000000000000000",
        "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
        "mrsigner": spec.qe_mrsigner.hex().upper(),
        "isvprodid": spec.qe_isv_prod_id,
        "tcbLevels": spec.qe_levels,
    }


def make_crl(
    issuer: Issued,
    *,
    revoked: tuple[int, ...] = (),
    this_update: datetime = NOW - timedelta(days=1),
    next_update: datetime = NOW + timedelta(days=29),
    signing_key: ec.EllipticCurvePrivateKey | None = None,
) -> bytes:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.cert.subject)
        .last_update(this_update)
        .next_update(next_update)
    )
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(this_update)
            .build()
        )
    crl = builder.sign(signing_key or issuer.key, hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.DER)


def make_collateral(pki: Pki, spec: CollateralSpec | None = None) -> Collateral:
    """Collateral for ``pki``'s platform, signed by its TCB signing key."""
    s = spec or CollateralSpec()
    chain = pki.tcb_signing_chain(url_encoded=s.url_encoded_chains)
    return Collateral(
        tcb_info=signed_json(pki.tcb_signing, "tcbInfo", tcb_info_value(s)),
        tcb_info_issuer_chain=chain,
        qe_identity=signed_json(pki.tcb_signing, "enclaveIdentity", qe_identity_value(s)),
        qe_identity_issuer_chain=chain,
        pck_crl=make_crl(
            pki.ca,
            revoked=(pki.pck.cert.serial_number,) if s.revoked_pck else (),
            next_update=s.crl_next_update,
        ),
        root_crl=make_crl(
            pki.root,
            revoked=(pki.ca.cert.serial_number,) if s.revoked_ca else (),
            next_update=s.crl_next_update,
        ),
    )
