"""The SEV-SNP ATTESTATION_REPORT structure and the host's certificate table.

Layout per AMD's SEV Secure Nested Paging Firmware ABI specification (56860),
Table "ATTESTATION_REPORT Structure", as implemented by go-sev-guest ``abi``:
0x4A0 bytes, little-endian; the signature covers bytes 0x000..0x2A0.

Versions 2 to 5 are accepted. Version 3 adds CPUID family/model/stepping at
0x188..0x18B; version 5 adds the launch and current mitigation vectors at
0x1F8 and 0x200. Every reserved byte must be zero, as must the unused tail of
the signature field; a violation raises :class:`MalformedEvidence` naming the
offset.

TCB_VERSION values are 8 bytes whose meaning depends on the product:
Milan and Genoa: ``bl, tee, rsvd, rsvd, rsvd, rsvd, snp, microcode``;
Turin: ``fmc, bl, tee, snp, rsvd, rsvd, rsvd, microcode`` (byte 0 first).
"""

from __future__ import annotations

import enum
import struct
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from prism_backends.attestation.common import MalformedEvidence

REPORT_SIZE = 0x4A0
SIGNATURE_OFFSET = 0x2A0
ECDSA_RS_SIZE = 72
ECDSA_SIGNATURE_SIZE = 2 * ECDSA_RS_SIZE
MIN_REPORT_VERSION = 2
MAX_REPORT_VERSION = 5
SIGN_ECDSA_P384_SHA384 = 1

FAMILY_ID_SIZE = 16
IMAGE_ID_SIZE = 16
REPORT_DATA_SIZE = 64
MEASUREMENT_SIZE = 48
HOST_DATA_SIZE = 32
ID_KEY_DIGEST_SIZE = 48
AUTHOR_KEY_DIGEST_SIZE = 48
REPORT_ID_SIZE = 32
REPORT_ID_MA_SIZE = 32
CHIP_ID_SIZE = 64

MILAN = "Milan"
GENOA = "Genoa"
TURIN = "Turin"
PRODUCTS = (MILAN, GENOA, TURIN)

CERT_TABLE_ENTRY_SIZE = 24
VCEK_GUID = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd")
VLEK_GUID = uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1")
ASK_GUID = uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782")  # also carries the ASVK
ARK_GUID = uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae")

# Guest policy bits (ABI spec "GUEST_POLICY"); bit 17 is reserved and must be one.
_POLICY_SMT = 16
_POLICY_RESERVED_ONE = 17
_POLICY_MIGRATE_MA = 18
_POLICY_DEBUG = 19
_POLICY_SINGLE_SOCKET = 20
_POLICY_CXL_ALLOW = 21
_POLICY_MEM_AES_256_XTS = 22
_POLICY_RAPL_DIS = 23
_POLICY_CIPHERTEXT_HIDING_DRAM = 24
_POLICY_PAGE_SWAP_DISABLE = 25
_POLICY_FIRST_MBZ = 26

PLATFORM_INFO_KNOWN_BITS = 0x3F


class SigningKey(enum.IntEnum):
    """SIGNER_INFO.SIGNING_KEY: which key signed the report."""

    VCEK = 0
    VLEK = 1
    NONE = 7


def _bit(value: int, bit: int) -> bool:
    return bool((value >> bit) & 1)


@dataclass(frozen=True, slots=True)
class GuestPolicy:
    """The decoded GUEST_POLICY bit field the VM owner chose at launch."""

    abi_minor: int
    abi_major: int
    smt: bool
    migrate_ma: bool
    debug: bool
    single_socket: bool
    cxl_allowed: bool
    mem_aes_256_xts: bool
    rapl_dis: bool
    ciphertext_hiding_dram: bool
    page_swap_disable: bool

    @property
    def abi_version(self) -> tuple[int, int]:
        """The minimum firmware ABI version (major, minor) the guest requires."""
        return (self.abi_major, self.abi_minor)


def parse_guest_policy(value: int) -> GuestPolicy:
    """Decode a 64-bit GUEST_POLICY; ValueError if bit 17 is clear or bits 26-63 are set."""
    if not 0 <= value < 1 << 64:
        raise ValueError(f"guest policy 0x{value:x} is not a 64-bit value")
    if not _bit(value, _POLICY_RESERVED_ONE):
        raise ValueError(f"guest policy 0x{value:x}: reserved bit 17 must be 1")
    if value >> _POLICY_FIRST_MBZ:
        raise ValueError(f"guest policy 0x{value:x}: reserved bits 26-63 must be 0")
    return GuestPolicy(
        abi_minor=value & 0xFF,
        abi_major=(value >> 8) & 0xFF,
        smt=_bit(value, _POLICY_SMT),
        migrate_ma=_bit(value, _POLICY_MIGRATE_MA),
        debug=_bit(value, _POLICY_DEBUG),
        single_socket=_bit(value, _POLICY_SINGLE_SOCKET),
        cxl_allowed=_bit(value, _POLICY_CXL_ALLOW),
        mem_aes_256_xts=_bit(value, _POLICY_MEM_AES_256_XTS),
        rapl_dis=_bit(value, _POLICY_RAPL_DIS),
        ciphertext_hiding_dram=_bit(value, _POLICY_CIPHERTEXT_HIDING_DRAM),
        page_swap_disable=_bit(value, _POLICY_PAGE_SWAP_DISABLE),
    )


@dataclass(frozen=True, slots=True)
class PlatformInfo:
    """The decoded PLATFORM_INFO bit field describing the host; ``unknown_bits``
    keeps any bit this code does not know (bits 6-63)."""

    smt_enabled: bool
    tsme_enabled: bool
    ecc_enabled: bool
    rapl_disabled: bool
    ciphertext_hiding_dram_enabled: bool
    alias_check_complete: bool
    unknown_bits: int


def parse_platform_info(value: int) -> PlatformInfo:
    """Decode a 64-bit PLATFORM_INFO value; unknown bits are kept, not rejected."""
    return PlatformInfo(
        smt_enabled=_bit(value, 0),
        tsme_enabled=_bit(value, 1),
        ecc_enabled=_bit(value, 2),
        rapl_disabled=_bit(value, 3),
        ciphertext_hiding_dram_enabled=_bit(value, 4),
        alias_check_complete=_bit(value, 5),
        unknown_bits=value & ~PLATFORM_INFO_KNOWN_BITS,
    )


@dataclass(frozen=True, slots=True)
class SignerInfo:
    """The decoded SIGNER_INFO field (offset 0x48)."""

    signing_key: SigningKey
    mask_chip_key: bool
    author_key_en: bool


def parse_signer_info(value: int) -> SignerInfo:
    """Decode SIGNER_INFO; MalformedEvidence for set reserved bits or a reserved key kind."""
    if value >> 5:
        raise MalformedEvidence(
            f"SIGNER_INFO at offset 0x048 is 0x{value:08x}: reserved bits 5-31 must be zero"
        )
    kind = (value >> 2) & 7
    if kind not in (SigningKey.VCEK, SigningKey.VLEK, SigningKey.NONE):
        raise MalformedEvidence(
            f"SIGNER_INFO at offset 0x048: SIGNING_KEY value {kind} is reserved"
        )
    return SignerInfo(
        signing_key=SigningKey(kind),
        mask_chip_key=_bit(value, 1),
        author_key_en=_bit(value, 0),
    )


@dataclass(frozen=True, slots=True)
class TcbParts:
    """A TCB_VERSION decoded for a product. ``fmc`` is None except on Turin;
    ``reserved`` holds the reserved bytes (which AMD's KDS calls SPL4-SPL7)."""

    product: str
    raw: int
    bl: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None
    reserved: tuple[int, ...]

    def as_dict(self) -> dict[str, int]:
        """The named security patch levels, for claims and messages."""
        named = {"bl": self.bl, "tee": self.tee, "snp": self.snp, "microcode": self.microcode}
        return named if self.fmc is None else {"fmc": self.fmc, **named}

    def describe(self) -> str:
        """``0x<raw> (bl=.. tee=.. snp=.. microcode=..)`` for people."""
        parts = " ".join(f"{k}={v}" for k, v in self.as_dict().items())
        return f"0x{self.raw:016x} ({parts})"


def _tcb_bytes(raw: int) -> bytes:
    if not 0 <= raw < 1 << 64:
        raise ValueError(f"TCB version 0x{raw:x} is not a 64-bit value")
    return raw.to_bytes(8, "little")


def decode_tcb(raw: int, product: str) -> TcbParts:
    """Split a 64-bit TCB_VERSION into its security patch levels for ``product``
    (Milan and Genoa share a layout; Turin adds FMC and moves SNP to byte 3)."""
    b = _tcb_bytes(raw)
    if product == TURIN:
        return TcbParts(
            product=product,
            raw=raw,
            fmc=b[0],
            bl=b[1],
            tee=b[2],
            snp=b[3],
            microcode=b[7],
            reserved=(b[4], b[5], b[6]),
        )
    if product in (MILAN, GENOA):
        return TcbParts(
            product=product,
            raw=raw,
            fmc=None,
            bl=b[0],
            tee=b[1],
            snp=b[6],
            microcode=b[7],
            reserved=(b[2], b[3], b[4], b[5]),
        )
    raise ValueError(f"unknown SEV-SNP product {product!r}; expected one of {PRODUCTS}")


def compose_tcb(
    product: str,
    *,
    bl: int,
    tee: int,
    snp: int,
    microcode: int,
    fmc: int = 0,
    reserved: Iterable[int] = (),
) -> int:
    """Build a 64-bit TCB_VERSION for ``product`` from its security patch levels."""
    res = list(reserved)
    values = [bl, tee, snp, microcode, fmc, *res]
    if any(not 0 <= v <= 0xFF for v in values):
        raise ValueError("TCB security patch levels must be 0-255")
    if len(res) > (3 if product == TURIN else 4):
        raise ValueError(f"too many reserved TCB bytes for {product}")
    if product == TURIN:
        res = [*res, 0, 0, 0][:3]
        layout = [fmc, bl, tee, snp, *res, microcode]
    elif product in (MILAN, GENOA):
        if fmc:
            raise ValueError(f"{product} TCB versions have no FMC security patch level")
        res = [*res, 0, 0, 0, 0][:4]
        layout = [bl, tee, *res, snp, microcode]
    else:
        raise ValueError(f"unknown SEV-SNP product {product!r}; expected one of {PRODUCTS}")
    return int.from_bytes(bytes(layout), "little")


def tcb_le(lower: int, higher: int) -> bool:
    """True when every byte (security patch level) of ``lower`` is <= that of
    ``higher``. Byte-wise, so it holds for every product's layout."""
    return all(a <= b for a, b in zip(_tcb_bytes(lower), _tcb_bytes(higher), strict=True))


def product_from_cpuid(family: int, model: int) -> str | None:
    """The product line for a CPUID family/model as version-3+ reports carry them,
    or None when unknown (family 19h models 00h-0Fh Milan, 10h-1Fh and A0h-AFh
    Genoa, incl. Bergamo/Siena; family 1Ah models 00h-1Fh Turin)."""
    if family == 0x19:
        if model <= 0x0F:
            return MILAN
        if 0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF:
            return GENOA
    if family == 0x1A and model <= 0x1F:
        return TURIN
    return None


@dataclass(frozen=True)
class Report:
    """A parsed ATTESTATION_REPORT. Byte fields are exactly as in the report;
    TCB fields are raw 64-bit values (decode with :func:`decode_tcb`)."""

    raw: bytes
    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: int
    platform_info: int
    signer_info: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: int
    cpuid_fam_id: int | None  # version 3+
    cpuid_mod_id: int | None
    cpuid_step: int | None
    chip_id: bytes
    committed_tcb: int
    current_build: int
    current_minor: int
    current_major: int
    committed_build: int
    committed_minor: int
    committed_major: int
    launch_tcb: int
    launch_mit_vector: int | None  # version 5+
    current_mit_vector: int | None
    signature_r: bytes  # 72 bytes, little-endian
    signature_s: bytes  # 72 bytes, little-endian

    def signed_bytes(self) -> bytes:
        """The bytes the signature covers: 0x000..0x2A0."""
        return self.raw[:SIGNATURE_OFFSET]

    def signature_ints(self) -> tuple[int, int]:
        """The ECDSA (r, s) as integers (the report stores them little-endian)."""
        return int.from_bytes(self.signature_r, "little"), int.from_bytes(
            self.signature_s, "little"
        )

    @property
    def signer(self) -> SignerInfo:
        """SIGNER_INFO decoded."""
        return parse_signer_info(self.signer_info)

    @property
    def signing_key(self) -> SigningKey:
        """Which key signed the report (VCEK, VLEK or NONE)."""
        return self.signer.signing_key

    @property
    def guest_policy(self) -> GuestPolicy:
        """GUEST_POLICY decoded (validated when the report was parsed)."""
        return parse_guest_policy(self.policy)

    @property
    def platform(self) -> PlatformInfo:
        """PLATFORM_INFO decoded."""
        return parse_platform_info(self.platform_info)

    @property
    def cpuid_product(self) -> str | None:
        """The product line the CPUID fields name (version 3+), else None."""
        if self.cpuid_fam_id is None or self.cpuid_mod_id is None:
            return None
        return product_from_cpuid(self.cpuid_fam_id, self.cpuid_mod_id)

    @property
    def current_version(self) -> tuple[int, int, int]:
        """The running firmware's (major, minor, build)."""
        return (self.current_major, self.current_minor, self.current_build)

    @property
    def committed_version(self) -> tuple[int, int, int]:
        """The committed firmware's (major, minor, build)."""
        return (self.committed_major, self.committed_minor, self.committed_build)


def _u32(data: bytes, offset: int) -> int:
    value: int = struct.unpack_from("<I", data, offset)[0]
    return value


def _u64(data: bytes, offset: int) -> int:
    value: int = struct.unpack_from("<Q", data, offset)[0]
    return value


def _must_be_zero(data: bytes, lo: int, hi: int, what: str) -> None:
    span = data[lo:hi]
    if span.count(0) == len(span):  # in C: most reports pass, and fast
        return
    for offset in range(lo, hi):
        if data[offset]:
            raise MalformedEvidence(
                f"{what} byte at offset 0x{offset:03x} is 0x{data[offset]:02x}, must be zero"
            )


def parse_report(data: bytes) -> Report:
    """Parse exactly one 0x4A0-byte report (versions 2-5), checking reserved bytes.

    Raises MalformedEvidence naming the offending offset or field."""
    data = bytes(data)
    if len(data) != REPORT_SIZE:
        raise MalformedEvidence(
            f"an SEV-SNP report is 0x{REPORT_SIZE:x} bytes, got 0x{len(data):x}"
        )
    version = _u32(data, 0x00)
    if not MIN_REPORT_VERSION <= version <= MAX_REPORT_VERSION:
        raise MalformedEvidence(
            f"report version {version} at offset 0x000 is not supported "
            f"(expected {MIN_REPORT_VERSION} to {MAX_REPORT_VERSION})"
        )
    policy = _u64(data, 0x08)
    try:
        parse_guest_policy(policy)
    except ValueError as exc:
        raise MalformedEvidence(f"GUEST_POLICY at offset 0x008: {exc}") from exc
    signer_info = _u32(data, 0x48)
    parse_signer_info(signer_info)
    _must_be_zero(data, 0x4C, 0x50, "reserved")

    if version >= 3:
        cpuid: tuple[int | None, int | None, int | None] = (data[0x188], data[0x189], data[0x18A])
        _must_be_zero(data, 0x18B, 0x1A0, "reserved")
    else:
        cpuid = (None, None, None)
        _must_be_zero(data, 0x188, 0x1A0, "reserved")
    _must_be_zero(data, 0x1EB, 0x1EC, "reserved")
    _must_be_zero(data, 0x1EF, 0x1F0, "reserved")
    if version >= 5:
        mit: tuple[int | None, int | None] = (_u64(data, 0x1F8), _u64(data, 0x200))
        _must_be_zero(data, 0x208, SIGNATURE_OFFSET, "reserved")
    else:
        mit = (None, None)
        _must_be_zero(data, 0x1F8, SIGNATURE_OFFSET, "reserved")
    signature_algo = _u32(data, 0x34)
    if signature_algo == SIGN_ECDSA_P384_SHA384:
        _must_be_zero(
            data, SIGNATURE_OFFSET + ECDSA_SIGNATURE_SIZE, REPORT_SIZE, "signature reserved"
        )
    sig = data[SIGNATURE_OFFSET : SIGNATURE_OFFSET + ECDSA_SIGNATURE_SIZE]
    return Report(
        raw=data,
        version=version,
        guest_svn=_u32(data, 0x04),
        policy=policy,
        family_id=data[0x10:0x20],
        image_id=data[0x20:0x30],
        vmpl=_u32(data, 0x30),
        signature_algo=signature_algo,
        current_tcb=_u64(data, 0x38),
        platform_info=_u64(data, 0x40),
        signer_info=signer_info,
        report_data=data[0x50:0x90],
        measurement=data[0x90:0xC0],
        host_data=data[0xC0:0xE0],
        id_key_digest=data[0xE0:0x110],
        author_key_digest=data[0x110:0x140],
        report_id=data[0x140:0x160],
        report_id_ma=data[0x160:0x180],
        reported_tcb=_u64(data, 0x180),
        cpuid_fam_id=cpuid[0],
        cpuid_mod_id=cpuid[1],
        cpuid_step=cpuid[2],
        chip_id=data[0x1A0:0x1E0],
        committed_tcb=_u64(data, 0x1E0),
        current_build=data[0x1E8],
        current_minor=data[0x1E9],
        current_major=data[0x1EA],
        committed_build=data[0x1EC],
        committed_minor=data[0x1ED],
        committed_major=data[0x1EE],
        launch_tcb=_u64(data, 0x1F0),
        launch_mit_vector=mit[0],
        current_mit_vector=mit[1],
        signature_r=sig[:ECDSA_RS_SIZE],
        signature_s=sig[ECDSA_RS_SIZE:],
    )


@dataclass(frozen=True, slots=True)
class CertTableEntry:
    """One certificate table entry: a GUID and its blob."""

    guid: uuid.UUID
    data: bytes


@dataclass(frozen=True, slots=True)
class CertTable:
    """The certificate table a host appends to an extended report (GHCB spec
    MSG_REPORT_REQ): GUID-keyed blobs, usually VCEK or VLEK, ASK, ARK."""

    entries: tuple[CertTableEntry, ...] = ()

    def get(self, guid: uuid.UUID) -> bytes | None:
        """The blob for ``guid``, or None when absent or empty."""
        for entry in self.entries:
            if entry.guid == guid:
                return entry.data or None
        return None

    @property
    def vcek(self) -> bytes | None:
        """The VCEK certificate, if the host supplied one."""
        return self.get(VCEK_GUID)

    @property
    def vlek(self) -> bytes | None:
        """The VLEK certificate, if the host supplied one."""
        return self.get(VLEK_GUID)

    @property
    def ask(self) -> bytes | None:
        """The ASK (or, for VLEK, ASVK) certificate, if the host supplied one."""
        return self.get(ASK_GUID)

    @property
    def ark(self) -> bytes | None:
        """The ARK certificate, if the host supplied one."""
        return self.get(ARK_GUID)


def parse_cert_table(data: bytes) -> CertTable:
    """Parse a certificate table: 24-byte entries (GUID, offset u32, length u32)
    ended by an all-zero entry; offsets are relative to the table's start.

    An empty input is an empty table. Raises MalformedEvidence for a missing
    terminator, an offset into the header or past the end, or a repeated GUID."""
    data = bytes(data)
    if not data:
        return CertTable()
    headers: list[tuple[uuid.UUID, int, int]] = []
    cursor = 0
    while True:
        if cursor + CERT_TABLE_ENTRY_SIZE > len(data):
            raise MalformedEvidence(
                f"certificate table entry at offset 0x{cursor:x} is truncated "
                "(no all-zero terminating entry)"
            )
        raw_guid = data[cursor : cursor + 16]
        offset, length = struct.unpack_from("<II", data, cursor + 16)
        cursor += CERT_TABLE_ENTRY_SIZE
        if offset == 0 and length == 0 and not any(raw_guid):
            break
        headers.append((uuid.UUID(bytes=raw_guid), offset, length))
    entries: list[CertTableEntry] = []
    seen: set[uuid.UUID] = set()
    for index, (guid, offset, length) in enumerate(headers):
        if guid in seen:
            raise MalformedEvidence(f"certificate table entry {index} repeats GUID {guid}")
        seen.add(guid)
        if offset < cursor:
            raise MalformedEvidence(
                f"certificate table entry {index} ({guid}) offset 0x{offset:x} points into "
                f"the table header (0x{cursor:x} bytes)"
            )
        if offset + length > len(data):
            raise MalformedEvidence(
                f"certificate table entry {index} ({guid}) range 0x{offset:x}+0x{length:x} "
                f"runs past the end of the table (0x{len(data):x} bytes)"
            )
        entries.append(CertTableEntry(guid=guid, data=data[offset : offset + length]))
    return CertTable(entries=tuple(entries))


def encode_cert_table(entries: Iterable[tuple[uuid.UUID, bytes]]) -> bytes:
    """Serialise (GUID, blob) pairs as a certificate table (the inverse of
    :func:`parse_cert_table`), blobs packed after the header in order."""
    items = list(entries)
    header_size = (len(items) + 1) * CERT_TABLE_ENTRY_SIZE
    header = bytearray()
    body = bytearray()
    for guid, blob in items:
        header += guid.bytes + struct.pack("<II", header_size + len(body), len(blob))
        body += blob
    header += bytes(CERT_TABLE_ENTRY_SIZE)
    return bytes(header + body)


@dataclass(frozen=True, slots=True)
class Attestation:
    """A report with the certificate table that followed it (possibly empty)."""

    report: Report
    certificates: CertTable


def parse_attestation(raw: bytes) -> Attestation:
    """Parse a report optionally followed by a certificate table: the first 0x4A0
    bytes are the report, anything after is the table."""
    raw = bytes(raw)
    if len(raw) < REPORT_SIZE:
        raise MalformedEvidence(f"an SEV-SNP report is 0x{REPORT_SIZE:x} bytes, got 0x{len(raw):x}")
    return Attestation(
        report=parse_report(raw[:REPORT_SIZE]),
        certificates=parse_cert_table(raw[REPORT_SIZE:]),
    )
