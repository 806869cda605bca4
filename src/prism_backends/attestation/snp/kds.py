"""AMD Key Distribution Service facts: VCEK/VLEK extensions, products, URLs.

Per AMD's "Versioned Chip Endorsement Key (VCEK) Certificate and KDS Interface
Specification" (57230), as go-sev-guest ``kds`` implements it. VCEK and VLEK
certificates carry, under OID 1.3.6.1.4.1.3704.1: ``.1`` struct version
(INTEGER), ``.2`` product name (IA5String, e.g. ``Milan-B0``), ``.3.1`` blSPL,
``.3.2`` teeSPL, ``.3.3`` snpSPL, ``.3.4``-``.3.7`` reserved SPLs, ``.3.8``
ucodeSPL, ``.3.9`` fmcSPL (Turin), all INTEGERs; ``.4`` hwid (VCEK only: the
chip id, raw octets; 64 bytes, 8 on Turin); ``.5`` CSP id (VLEK only, IA5String).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from prism_backends.attestation.common import ChainInvalid
from prism_backends.attestation.snp.abi import (
    CHIP_ID_SIZE,
    PRODUCTS,
    TURIN,
    SigningKey,
    compose_tcb,
    decode_tcb,
)

KDS_BASE_URL = "https://kdsintf.amd.com"
TURIN_HWID_SIZE = 8

OID_ARC = "1.3.6.1.4.1.3704.1"
OID_STRUCT_VERSION = x509.ObjectIdentifier(f"{OID_ARC}.1")
OID_PRODUCT_NAME = x509.ObjectIdentifier(f"{OID_ARC}.2")
OID_BL_SPL = x509.ObjectIdentifier(f"{OID_ARC}.3.1")
OID_TEE_SPL = x509.ObjectIdentifier(f"{OID_ARC}.3.2")
OID_SNP_SPL = x509.ObjectIdentifier(f"{OID_ARC}.3.3")
OID_SPL4 = x509.ObjectIdentifier(f"{OID_ARC}.3.4")
OID_SPL5 = x509.ObjectIdentifier(f"{OID_ARC}.3.5")
OID_SPL6 = x509.ObjectIdentifier(f"{OID_ARC}.3.6")
OID_SPL7 = x509.ObjectIdentifier(f"{OID_ARC}.3.7")
OID_UCODE_SPL = x509.ObjectIdentifier(f"{OID_ARC}.3.8")
OID_FMC_SPL = x509.ObjectIdentifier(f"{OID_ARC}.3.9")
OID_HWID = x509.ObjectIdentifier(f"{OID_ARC}.4")
OID_CSP_ID = x509.ObjectIdentifier(f"{OID_ARC}.5")

_TAG_INTEGER = 0x02
_TAG_OCTET_STRING = 0x04
_TAG_IA5STRING = 0x16


def normalize_product(product: str) -> str:
    """``"milan"``, ``"Milan-B0"`` or ``"SEV_PRODUCT_MILAN"`` -> ``"Milan"``;
    ValueError for anything else."""
    name = product.strip()
    if name.upper().startswith("SEV_PRODUCT_"):
        name = name[len("SEV_PRODUCT_") :]
    line = name.split("-", 1)[0].capitalize()
    if line not in PRODUCTS:
        raise ValueError(f"unknown SEV-SNP product {product!r}; expected one of {PRODUCTS}")
    return line


def hwid_size(product: str) -> int:
    """The byte length of a VCEK's hwid for ``product``: 8 on Turin, else 64."""
    return TURIN_HWID_SIZE if product == TURIN else CHIP_ID_SIZE


def vcek_url(product: str, chip_id: bytes, reported_tcb: int) -> str:
    """The KDS URL of the VCEK for this chip at this REPORTED_TCB. Turin uses the
    first 8 bytes of the chip id and adds ``fmcSPL`` (first, as go-sev-guest does)."""
    tcb = decode_tcb(reported_tcb, product)
    hwid = bytes(chip_id)[: hwid_size(product)]
    query = f"blSPL={tcb.bl}&teeSPL={tcb.tee}&snpSPL={tcb.snp}&ucodeSPL={tcb.microcode}"
    if product == TURIN:
        query = f"fmcSPL={tcb.fmc}&{query}"
    return f"{KDS_BASE_URL}/vcek/v1/{product}/{hwid.hex()}?{query}"


@dataclass(frozen=True, slots=True)
class EndorsementExtensions:
    """The KDS extensions of a VCEK or VLEK certificate."""

    struct_version: int
    product_name: str  # e.g. "Milan-B0"
    product: str  # the product line, e.g. "Milan"
    bl_spl: int
    tee_spl: int
    snp_spl: int
    ucode_spl: int
    fmc_spl: int | None  # Turin only
    reserved_spls: tuple[int, ...]  # SPL4-SPL7 (Milan, Genoa) or SPL5-SPL7 (Turin)
    hwid: bytes | None  # VCEK only
    csp_id: str | None  # VLEK only

    @property
    def tcb(self) -> int:
        """The TCB_VERSION the certificate is issued for, composed per product."""
        return compose_tcb(
            self.product,
            bl=self.bl_spl,
            tee=self.tee_spl,
            snp=self.snp_spl,
            microcode=self.ucode_spl,
            fmc=self.fmc_spl or 0,
            reserved=self.reserved_spls,
        )

    def spls(self) -> dict[str, int]:
        """The security patch levels by KDS name (blSPL, ..., spl4...)."""
        named = {
            "blSPL": self.bl_spl,
            "teeSPL": self.tee_spl,
            "snpSPL": self.snp_spl,
            "ucodeSPL": self.ucode_spl,
        }
        if self.fmc_spl is not None:
            named = {"fmcSPL": self.fmc_spl, **named}
        first = 5 if self.product == TURIN else 4
        for i, value in enumerate(self.reserved_spls):
            named[f"spl{first + i}"] = value
        return named


def _der_tlv(data: bytes, what: str) -> tuple[int, bytes, bytes]:
    """Split one DER TLV: (tag, contents, rest). Definite, minimal lengths only."""
    if len(data) < 2:
        raise ChainInvalid(f"{what}: truncated DER value")
    tag, first = data[0], data[1]
    pos = 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or len(data) < 2 + count:
            raise ChainInvalid(f"{what}: unsupported DER length")
        length = int.from_bytes(data[2 : 2 + count], "big")
        if length < 0x80 or data[2] == 0:
            raise ChainInvalid(f"{what}: non-minimal DER length")
        pos += count
    if len(data) < pos + length:
        raise ChainInvalid(f"{what}: truncated DER value")
    return tag, data[pos : pos + length], data[pos + length :]


def _der_u8(data: bytes, what: str) -> int:
    tag, content, rest = _der_tlv(data, what)
    if tag != _TAG_INTEGER or rest or not content:
        raise ChainInvalid(f"{what}: not a single DER INTEGER")
    if content[0] & 0x80:
        raise ChainInvalid(f"{what}: negative INTEGER")
    if len(content) > 1 and content[0] == 0 and not content[1] & 0x80:
        raise ChainInvalid(f"{what}: non-minimal INTEGER")
    value = int.from_bytes(content, "big")
    if value > 0xFF:
        raise ChainInvalid(f"{what}: {value} is not 0-255")
    return value


def _der_ia5(data: bytes, what: str) -> str:
    tag, content, rest = _der_tlv(data, what)
    if tag != _TAG_IA5STRING or rest:
        raise ChainInvalid(f"{what}: not a single DER IA5String")
    if any(b > 0x7F for b in content):
        raise ChainInvalid(f"{what}: IA5String holds non-ASCII bytes")
    return content.decode("ascii")


def _hwid(data: bytes, size: int, what: str) -> bytes:
    # KDS writes the hwid as raw octets without a DER tag; accept an OCTET
    # STRING too, in case AMD ever adds the tag (as go-sev-guest does).
    if len(data) == size:
        return data
    tag, content, rest = _der_tlv(data, what)
    if tag != _TAG_OCTET_STRING or rest or len(content) != size:
        raise ChainInvalid(f"{what}: expected {size} octets")
    return content


def _extension_map(cert: x509.Certificate) -> dict[str, bytes]:
    values: dict[str, bytes] = {}
    for ext in cert.extensions:
        oid = ext.oid.dotted_string
        if oid.startswith(OID_ARC + "."):
            if not isinstance(ext.value, x509.UnrecognizedExtension):  # pragma: no cover
                raise ChainInvalid(f"extension {oid} has an unexpected type")
            values[oid] = ext.value.value
    return values


def parse_endorsement_extensions(
    cert: x509.Certificate, kind: SigningKey, role: str = "VCEK"
) -> EndorsementExtensions:
    """Read and check the KDS extensions of a VCEK (``kind`` VCEK: hwid required,
    no CSP id) or VLEK (CSP id required, no hwid). ChainInvalid names what is
    missing or malformed."""
    exts = _extension_map(cert)

    def required(oid: x509.ObjectIdentifier, name: str) -> bytes:
        value = exts.get(oid.dotted_string)
        if value is None:
            raise ChainInvalid(
                f"{role} certificate lacks the {name} extension ({oid.dotted_string})"
            )
        return value

    struct_version = _der_u8(
        required(OID_STRUCT_VERSION, "struct version"), f"{role} structVersion"
    )
    product_name = _der_ia5(required(OID_PRODUCT_NAME, "product name"), f"{role} productName")
    try:
        product = normalize_product(product_name)
    except ValueError as exc:
        raise ChainInvalid(f"{role} certificate names unknown product {product_name!r}") from exc

    def spl(oid: x509.ObjectIdentifier, name: str, *, optional: bool = False) -> int:
        raw = exts.get(oid.dotted_string)
        if raw is None:
            if optional:
                return 0
            raise ChainInvalid(
                f"{role} certificate lacks the {name} extension ({oid.dotted_string})"
            )
        return _der_u8(raw, f"{role} {name}")

    fmc: int | None = None
    if product == TURIN:
        fmc = spl(OID_FMC_SPL, "fmcSPL")
        reserved = tuple(
            spl(oid, name, optional=True)
            for oid, name in ((OID_SPL5, "spl5"), (OID_SPL6, "spl6"), (OID_SPL7, "spl7"))
        )
    else:
        if OID_FMC_SPL.dotted_string in exts:
            raise ChainInvalid(f"{role} certificate for {product} carries an fmcSPL extension")
        reserved = tuple(
            spl(oid, name, optional=True)
            for oid, name in (
                (OID_SPL4, "spl4"),
                (OID_SPL5, "spl5"),
                (OID_SPL6, "spl6"),
                (OID_SPL7, "spl7"),
            )
        )

    hwid: bytes | None = None
    if OID_HWID.dotted_string in exts:
        hwid = _hwid(exts[OID_HWID.dotted_string], hwid_size(product), f"{role} hwid")
    csp_id: str | None = None
    if OID_CSP_ID.dotted_string in exts:
        csp_id = _der_ia5(exts[OID_CSP_ID.dotted_string], f"{role} CSP id")
    if kind == SigningKey.VCEK:
        if hwid is None:
            raise ChainInvalid(
                f"{role} certificate lacks the hwid extension ({OID_HWID.dotted_string})"
            )
        if csp_id is not None:
            raise ChainInvalid(f"{role} certificate carries a CSP id, which only VLEKs have")
    elif kind == SigningKey.VLEK:
        if csp_id is None:
            raise ChainInvalid(
                f"{role} certificate lacks the CSP id extension ({OID_CSP_ID.dotted_string})"
            )
        if hwid is not None:
            raise ChainInvalid(f"{role} certificate carries a hwid, which only VCEKs have")
    else:
        raise ValueError(f"no endorsement key certificate for signing key {kind!r}")
    return EndorsementExtensions(
        struct_version=struct_version,
        product_name=product_name,
        product=product,
        bl_spl=spl(OID_BL_SPL, "blSPL"),
        tee_spl=spl(OID_TEE_SPL, "teeSPL"),
        snp_spl=spl(OID_SNP_SPL, "snpSPL"),
        ucode_spl=spl(OID_UCODE_SPL, "ucodeSPL"),
        fmc_spl=fmc,
        reserved_spls=reserved,
        hwid=hwid,
        csp_id=csp_id,
    )
