"""A synthetic AMD key hierarchy and SEV-SNP report signer. FOR TESTS ONLY.

Generates an ARK (RSA 4096, RSA-PSS self-signed), an ASK and an ASVK (RSA, signed
by the ARK) and VCEKs/VLEKs (ECDSA P-384) carrying AMD's KDS extensions, all
with AMD's subject names, and builds and signs attestation reports with chosen
fields. Nothing here is AMD's: these keys are trusted only by tests that pass
:meth:`Hierarchy.roots` explicitly.
"""

from __future__ import annotations

import dataclasses
import functools
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from prism_backends.attestation.snp import abi, kds
from prism_backends.attestation.snp.trust import ProductRoots

NOT_BEFORE = datetime(2024, 1, 1, tzinfo=UTC)
NOT_AFTER = datetime(2034, 1, 1, tzinfo=UTC)
NOW = datetime(2025, 6, 1, tzinfo=UTC)
PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)


def amd_name(common_name: str) -> x509.Name:
    """An X.509 name in AMD's KDS form (OU, C, L, ST, O, CN)."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Santa Clara"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Advanced Micro Devices"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


@functools.cache
def rsa_key(label: str, bits: int) -> rsa.RSAPrivateKey:
    """An RSA key, generated once per (label, size) and then reused."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@functools.cache
def ec_key(label: str) -> ec.EllipticCurvePrivateKey:
    """A P-384 key, generated once per label and then reused."""
    return ec.generate_private_key(ec.SECP384R1())


def _der_int(value: int) -> bytes:
    body = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big")
    return bytes([0x02, len(body)]) + body


def _der_ia5(text: str) -> bytes:
    body = text.encode("ascii")
    return bytes([0x16, len(body)]) + body


def _amd_ext(oid: x509.ObjectIdentifier, value: bytes) -> x509.UnrecognizedExtension:
    return x509.UnrecognizedExtension(oid, value)


def _ca(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: rsa.RSAPublicKey,
    signer: rsa.RSAPrivateKey,
    path_length: int | None,
    not_before: datetime = NOT_BEFORE,
    not_after: datetime = NOT_AFTER,
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(signer, hashes.SHA384(), rsa_padding=PSS)
    )


@dataclass(frozen=True)
class Endorsement:
    """An endorsement key (VCEK or VLEK) and its certificate."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def der(self) -> bytes:
        """The certificate, DER-encoded."""
        return self.cert.public_bytes(Encoding.DER)


@dataclass(frozen=True)
class Hierarchy:
    """A synthetic ARK -> ASK/ASVK hierarchy for one product."""

    product: str
    label: str
    ark_key: rsa.RSAPrivateKey
    ark: x509.Certificate
    ask_key: rsa.RSAPrivateKey
    ask: x509.Certificate
    asvk_key: rsa.RSAPrivateKey
    asvk: x509.Certificate

    def roots(self) -> dict[str, ProductRoots]:
        """Roots trusting this hierarchy (and nothing else)."""
        return {
            self.product: ProductRoots(
                product=self.product, ark=self.ark, ask=self.ask, asvk=self.asvk
            )
        }

    def endorsement(
        self,
        kind: abi.SigningKey = abi.SigningKey.VCEK,
        *,
        tcb: int,
        chip_id: bytes | None = None,
        csp_id: str = "Synthetic CSP",
        product_name: str | None = None,
        key_label: str = "default",
        not_before: datetime = NOT_BEFORE,
        not_after: datetime = NOT_AFTER,
        omit: tuple[x509.ObjectIdentifier, ...] = (),
        extra: tuple[x509.Extension[x509.ExtensionType], ...] = (),
        hwid: bytes | None = None,
        issuer_key: rsa.RSAPrivateKey | None = None,
    ) -> Endorsement:
        """A VCEK (with hwid = chip id, 8 bytes on Turin) or VLEK (with CSP id)
        certified by this hierarchy's ASK or ASVK for ``tcb``."""
        key = ec_key(f"{self.label}/{kind.name}/{key_label}")
        parts = abi.decode_tcb(tcb, self.product)
        role = kind.name
        exts: list[tuple[x509.ObjectIdentifier, bytes]] = [
            (kds.OID_STRUCT_VERSION, _der_int(1)),
            (kds.OID_PRODUCT_NAME, _der_ia5(product_name or f"{self.product}-B0")),
            (kds.OID_BL_SPL, _der_int(parts.bl)),
            (kds.OID_TEE_SPL, _der_int(parts.tee)),
            (kds.OID_SNP_SPL, _der_int(parts.snp)),
            (kds.OID_UCODE_SPL, _der_int(parts.microcode)),
        ]
        if self.product == abi.TURIN:
            assert parts.fmc is not None
            exts.append((kds.OID_FMC_SPL, _der_int(parts.fmc)))
            reserved: tuple[x509.ObjectIdentifier, ...] = (kds.OID_SPL5, kds.OID_SPL6, kds.OID_SPL7)
        else:
            reserved = (kds.OID_SPL4, kds.OID_SPL5, kds.OID_SPL6, kds.OID_SPL7)
        exts += [(oid, _der_int(v)) for oid, v in zip(reserved, parts.reserved, strict=True)]
        if kind == abi.SigningKey.VCEK:
            size = kds.hwid_size(self.product)
            value = hwid if hwid is not None else (chip_id or bytes(64))[:size]
            exts.append((kds.OID_HWID, value))
        else:
            exts.append((kds.OID_CSP_ID, _der_ia5(csp_id)))
            if hwid is not None:
                exts.append((kds.OID_HWID, hwid))
        issuer_name = (
            f"SEV-{self.product}" if kind == abi.SigningKey.VCEK else f"SEV-VLEK-{self.product}"
        )
        signer = issuer_key or (self.ask_key if kind == abi.SigningKey.VCEK else self.asvk_key)
        builder = (
            x509.CertificateBuilder()
            .subject_name(amd_name(f"SEV-{role}"))
            .issuer_name(amd_name(issuer_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
        )
        for oid, value in exts:
            if oid not in omit:
                builder = builder.add_extension(_amd_ext(oid, value), critical=False)
        for ext in extra:
            builder = builder.add_extension(ext.value, critical=ext.critical)
        return Endorsement(key=key, cert=builder.sign(signer, hashes.SHA384(), rsa_padding=PSS))


@functools.cache
def hierarchy(product: str = abi.MILAN, label: str = "synthetic") -> Hierarchy:
    """The synthetic hierarchy for ``product`` (one per label, cached)."""
    ark_key = rsa_key(f"{label}/ark", 4096)
    ask_key = rsa_key(f"{label}/ask", 2048)
    asvk_key = rsa_key(f"{label}/asvk", 2048)
    ark_name = amd_name(f"ARK-{product}")
    ark = _ca(ark_name, ark_name, ark_key.public_key(), ark_key, None)
    ask = _ca(amd_name(f"SEV-{product}"), ark_name, ask_key.public_key(), ark_key, 0)
    asvk = _ca(amd_name(f"SEV-VLEK-{product}"), ark_name, asvk_key.public_key(), ark_key, 0)
    return Hierarchy(product, label, ark_key, ark, ask_key, ask, asvk_key, asvk)


MILAN_TCB = abi.compose_tcb(abi.MILAN, bl=3, tee=0, snp=14, microcode=209)
CHIP_ID = bytes(range(1, 65))


@dataclass(frozen=True)
class ReportSpec:
    """The fields of a report to build; defaults describe a plausible Milan guest."""

    version: int = 3
    guest_svn: int = 1
    policy: int = 0x30000  # SMT allowed, reserved bit 17
    family_id: bytes = bytes(16)
    image_id: bytes = bytes(16)
    vmpl: int = 0
    signature_algo: int = 1
    current_tcb: int = MILAN_TCB
    platform_info: int = 0x1
    signer_info: int = 0  # VCEK
    report_data: bytes = bytes(64)
    measurement: bytes = bytes(range(48))
    host_data: bytes = bytes(32)
    id_key_digest: bytes = bytes(48)
    author_key_digest: bytes = bytes(48)
    report_id: bytes = bytes(32)
    report_id_ma: bytes = b"\xff" * 32
    reported_tcb: int = MILAN_TCB
    cpuid: tuple[int, int, int] = (0x19, 0x01, 0x01)  # Milan B1
    chip_id: bytes = CHIP_ID
    committed_tcb: int = MILAN_TCB
    current: tuple[int, int, int] = (1, 55, 21)  # major, minor, build
    committed: tuple[int, int, int] = (1, 55, 21)
    launch_tcb: int = MILAN_TCB
    mit_vectors: tuple[int, int] = (0, 0)  # version 5+

    def replace(self, **changes: Any) -> ReportSpec:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def encode(self) -> bytearray:
        """The report's bytes with a zero signature."""
        b = bytearray(abi.REPORT_SIZE)
        struct.pack_into("<IIQ", b, 0x00, self.version, self.guest_svn, self.policy)
        b[0x10:0x20] = self.family_id
        b[0x20:0x30] = self.image_id
        struct.pack_into(
            "<IIQQI",
            b,
            0x30,
            self.vmpl,
            self.signature_algo,
            self.current_tcb,
            self.platform_info,
            self.signer_info,
        )
        b[0x50:0x90] = self.report_data
        b[0x90:0xC0] = self.measurement
        b[0xC0:0xE0] = self.host_data
        b[0xE0:0x110] = self.id_key_digest
        b[0x110:0x140] = self.author_key_digest
        b[0x140:0x160] = self.report_id
        b[0x160:0x180] = self.report_id_ma
        struct.pack_into("<Q", b, 0x180, self.reported_tcb)
        if self.version >= 3:
            b[0x188:0x18B] = bytes(self.cpuid)
        b[0x1A0:0x1E0] = self.chip_id
        struct.pack_into("<Q", b, 0x1E0, self.committed_tcb)
        major, minor, build = self.current
        b[0x1E8:0x1EB] = bytes([build, minor, major])
        major, minor, build = self.committed
        b[0x1EC:0x1EF] = bytes([build, minor, major])
        struct.pack_into("<Q", b, 0x1F0, self.launch_tcb)
        if self.version >= 5:
            struct.pack_into("<QQ", b, 0x1F8, *self.mit_vectors)
        assert len(b) == abi.REPORT_SIZE
        return b


def sign_report(body: bytes | bytearray, key: ec.EllipticCurvePrivateKey) -> bytes:
    """Sign bytes 0..0x2A0 with ``key`` and store R and S little-endian, 72 bytes each."""
    out = bytearray(body)
    der = key.sign(bytes(out[: abi.SIGNATURE_OFFSET]), ec.ECDSA(hashes.SHA384()))
    r, s = decode_dss_signature(der)
    off = abi.SIGNATURE_OFFSET
    out[off : off + 72] = r.to_bytes(72, "little")
    out[off + 72 : off + 144] = s.to_bytes(72, "little")
    return bytes(out)


def signed(spec: ReportSpec, endorsement: Endorsement) -> bytes:
    """The report ``spec`` describes, signed by ``endorsement``."""
    return sign_report(spec.encode(), endorsement.key)
