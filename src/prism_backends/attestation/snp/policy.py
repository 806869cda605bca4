"""go-sev-guest ``check.Config`` policies, as Cocos writes them.

A document is ``{"policy": {...}, "root_of_trust": {...}}`` (proto
``check.Config``). Keys may be the proto field names (snake_case) or protojson
names (camelCase). Following protojson: 64-bit integers may be numbers or
decimal strings, ``null`` means unset, bytes are base64 (standard or URL-safe,
padding optional). Fixed-size byte fields (the ones go-sev-guest's ``check``
tool also takes as hex flags: measurement, report data, host data, ids, chip id,
key hashes) may be hex instead; the size tells the two apart, since 2n hex
characters never decode from base64 to n bytes. Unknown keys, wrong types and
wrong sizes raise :class:`PolicyError` naming the field.

Divergence from go-sev-guest: an absent or zero ``policy`` means "allow no
optional guest-policy feature" (go-sev-guest rejects it because reserved bit 17
is clear); a non-zero ``policy`` must have bit 17 set.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from prism_backends.attestation.common import ChainInvalid, PolicyError
from prism_backends.attestation.snp.abi import (
    CHIP_ID_SIZE,
    FAMILY_ID_SIZE,
    HOST_DATA_SIZE,
    ID_KEY_DIGEST_SIZE,
    IMAGE_ID_SIZE,
    MEASUREMENT_SIZE,
    PLATFORM_INFO_KNOWN_BITS,
    PRODUCTS,
    REPORT_DATA_SIZE,
    REPORT_ID_MA_SIZE,
    REPORT_ID_SIZE,
    GuestPolicy,
    parse_guest_policy,
)
from prism_backends.attestation.snp.kds import normalize_product
from prism_backends.attestation.snp.trust import load_certificate

_PRODUCT_ENUM = {
    "SEV_PRODUCT_UNKNOWN": None,
    "SEV_PRODUCT_MILAN": "Milan",
    "SEV_PRODUCT_GENOA": "Genoa",
    "SEV_PRODUCT_TURIN": "Turin",
}
_PRODUCT_NUMBERS = dict(enumerate(_PRODUCT_ENUM.values()))
_POLICY_BIT17 = 1 << 17


@dataclass(frozen=True, slots=True)
class ProductSpec:
    """Policy ``product`` (proto ``sevsnp.SevProduct``): the expected product line
    (None for SEV_PRODUCT_UNKNOWN) and, optionally, the machine stepping."""

    name: str | None
    machine_stepping: int | None = None


@dataclass(frozen=True)
class SnpPolicy:
    """A parsed ``check.Policy``. Empty bytes and None mean "not checked"."""

    minimum_guest_svn: int = 0
    policy: int = 0
    family_id: bytes = b""
    image_id: bytes = b""
    vmpl: int | None = None
    minimum_tcb: int = 0
    minimum_launch_tcb: int = 0
    platform_info: int | None = None
    require_author_key: bool = False
    report_data: bytes = b""
    measurement: bytes = b""
    host_data: bytes = b""
    report_id: bytes = b""
    report_id_ma: bytes = b""
    chip_id: bytes = b""
    minimum_build: int = 0
    minimum_version: tuple[int, int] = (0, 0)
    permit_provisional_firmware: bool = False
    require_id_block: bool = False
    trusted_author_keys: tuple[bytes, ...] = ()  # DER certificates
    trusted_author_key_hashes: tuple[bytes, ...] = ()
    trusted_id_keys: tuple[bytes, ...] = ()  # DER certificates
    trusted_id_key_hashes: tuple[bytes, ...] = ()
    product: ProductSpec | None = None
    minimum_tcb_turin: int = 0
    minimum_launch_tcb_turin: int = 0

    @property
    def guest_policy(self) -> GuestPolicy:
        """The maximum permitted guest policy (bit 17 implied when unset)."""
        return parse_guest_policy(self.policy | _POLICY_BIT17)


@dataclass(frozen=True)
class RootOfTrust:
    """A parsed ``check.RootOfTrust``. Carried for callers; :func:`verify` takes
    its roots as a parameter and does no I/O, so paths are not read here."""

    product: str = ""
    cabundle_paths: tuple[str, ...] = ()
    cabundles: tuple[str, ...] = ()
    check_crl: bool = False
    disallow_network: bool = False
    product_line: str = ""


@dataclass(frozen=True)
class SnpConfig:
    """A parsed ``check.Config``."""

    policy: SnpPolicy = field(default_factory=SnpPolicy)
    root_of_trust: RootOfTrust = field(default_factory=RootOfTrust)


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(p.capitalize() for p in rest)


def _canonical_keys(doc: Mapping[str, Any], known: tuple[str, ...], where: str) -> dict[str, Any]:
    """Map snake_case and camelCase keys to snake_case; PolicyError for unknown or repeated."""
    aliases = {name: name for name in known} | {_camel(name): name for name in known}
    unknown = sorted(str(k) for k in doc if k not in aliases)
    if unknown:
        raise PolicyError(f"unknown key(s) in {where}: {', '.join(unknown)}")
    out: dict[str, Any] = {}
    for key, value in doc.items():
        name = aliases[key]
        if name in out:
            raise PolicyError(f"{where}.{name} is given twice (as snake_case and camelCase)")
        out[name] = value
    return out


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PolicyError(f"{where} must be a JSON object, got {type(value).__name__}")
    return value


def _uint(value: Any, name: str, bits: int) -> int:
    if isinstance(value, bool):
        raise PolicyError(f"{name} must be an integer, got a boolean")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int):
        raise PolicyError(f"{name} must be an unsigned integer, got {value!r}")
    if not 0 <= value < 1 << bits:
        raise PolicyError(f"{name} is {value}, not a {bits}-bit unsigned integer")
    return value


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise PolicyError(f"{name} must be true or false, got {value!r}")
    return value


def _string(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise PolicyError(f"{name} must be a string, got {value!r}")
    return value


def _b64(text: str) -> bytes | None:
    altchars = b"-_" if ("-" in text or "_" in text) else None
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.b64decode(padded, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        return None


def _hex(text: str) -> bytes | None:
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


def _bytes(value: Any, name: str, size: int | None) -> bytes:
    """Decode a bytes field: base64 (protojson), or hex for fixed-size fields."""
    text = _string(value, name).strip()
    if not text:
        return b""
    decoded = _b64(text)
    if size is None:
        if decoded is None:
            raise PolicyError(f"{name} is not base64")
        return decoded
    if decoded is not None and len(decoded) == size:
        return decoded
    as_hex = _hex(text)
    if as_hex is not None and len(as_hex) == size:
        return as_hex
    lengths = [f"{len(d)} bytes as {k}" for k, d in (("base64", decoded), ("hex", as_hex)) if d]
    found = " or ".join(lengths) or "neither base64 nor hex"
    raise PolicyError(f"{name} must be {size} bytes (base64 or hex), got {found}")


def _repeated(value: Any, name: str, item: Callable[[Any, str], bytes]) -> tuple[bytes, ...]:
    if not isinstance(value, list):
        raise PolicyError(f"{name} must be a list, got {value!r}")
    return tuple(item(v, f"{name}[{i}]") for i, v in enumerate(value))


def _der_certificate(value: Any, name: str) -> bytes:
    der = _bytes(value, name, None)
    try:
        load_certificate(der, name)
    except ChainInvalid as exc:
        raise PolicyError(exc.reason) from exc
    return der


def _key_hash(value: Any, name: str) -> bytes:
    digest = _bytes(value, name, ID_KEY_DIGEST_SIZE)
    if not digest:
        raise PolicyError(f"{name} is empty")
    return digest


def _version(value: Any, name: str) -> tuple[int, int]:
    text = _string(value, name).strip()
    if not text:
        return (0, 0)
    parts = text.split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise PolicyError(f"{name} must be 'major.minor', got {text!r}")
    major, minor = int(parts[0]), int(parts[1])
    if major > 255 or minor > 255:
        raise PolicyError(f"{name} {text!r}: major and minor must be 0-255")
    return (major, minor)


def _product(value: Any, name: str) -> ProductSpec | None:
    doc = _canonical_keys(_mapping(value, name), ("name", "stepping", "machine_stepping"), name)
    raw_name = doc.get("name")
    line: str | None = None
    if raw_name is not None:
        if isinstance(raw_name, str) and raw_name in _PRODUCT_ENUM:
            line = _PRODUCT_ENUM[raw_name]
        elif isinstance(raw_name, int) and not isinstance(raw_name, bool):
            if raw_name not in _PRODUCT_NUMBERS:
                raise PolicyError(f"{name}.name {raw_name} is not a SevProductName")
            line = _PRODUCT_NUMBERS[raw_name]
        else:
            raise PolicyError(
                f"{name}.name must be one of {', '.join(_PRODUCT_ENUM)}, got {raw_name!r}"
            )
    stepping: int | None = None
    if doc.get("machine_stepping") is not None:
        stepping = _uint(doc["machine_stepping"], f"{name}.machine_stepping", 32)
    elif doc.get("stepping") is not None:
        stepping = _uint(doc["stepping"], f"{name}.stepping", 32)
    if stepping is not None and stepping > 0xF:
        raise PolicyError(f"{name} stepping {stepping} is not a 4-bit value")
    if line is None and stepping is None:
        return None
    return ProductSpec(name=line, machine_stepping=stepping)


_SIZES = {
    "family_id": FAMILY_ID_SIZE,
    "image_id": IMAGE_ID_SIZE,
    "report_data": REPORT_DATA_SIZE,
    "measurement": MEASUREMENT_SIZE,
    "host_data": HOST_DATA_SIZE,
    "report_id": REPORT_ID_SIZE,
    "report_id_ma": REPORT_ID_MA_SIZE,
    "chip_id": CHIP_ID_SIZE,
}
_UINT64 = (
    "policy",
    "minimum_tcb",
    "minimum_launch_tcb",
    "minimum_tcb_turin",
    "minimum_launch_tcb_turin",
)
_UINT32 = ("minimum_guest_svn", "minimum_build")
_BOOLS = ("require_author_key", "permit_provisional_firmware", "require_id_block")
_POLICY_FIELDS = (
    *_UINT32,
    *_UINT64,
    *_SIZES,
    *_BOOLS,
    "vmpl",
    "platform_info",
    "minimum_version",
    "trusted_author_keys",
    "trusted_author_key_hashes",
    "trusted_id_keys",
    "trusted_id_key_hashes",
    "product",
)


def parse_policy(document: Mapping[str, Any]) -> SnpPolicy:
    """Parse a ``check.Policy`` object (already decoded from JSON)."""
    doc = _canonical_keys(_mapping(document, "policy"), _POLICY_FIELDS, "policy")
    values: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"policy.{key}"
        if value is None:
            continue
        if key in _UINT32:
            values[key] = _uint(value, name, 32)
        elif key in _UINT64:
            values[key] = _uint(value, name, 64)
        elif key in _SIZES:
            values[key] = _bytes(value, name, _SIZES[key])
        elif key in _BOOLS:
            values[key] = _bool(value, name)
        elif key == "vmpl":
            values[key] = _uint(value, name, 32)
            if values[key] > 3:
                raise PolicyError(f"{name} is {values[key]}, expected 0-3")
        elif key == "platform_info":
            values[key] = _uint(value, name, 64)
            if values[key] & ~PLATFORM_INFO_KNOWN_BITS:
                raise PolicyError(f"{name} 0x{values[key]:x} sets unknown bits")
        elif key == "minimum_version":
            values[key] = _version(value, name)
        elif key in ("trusted_author_keys", "trusted_id_keys"):
            values[key] = _repeated(value, name, _der_certificate)
        elif key in ("trusted_author_key_hashes", "trusted_id_key_hashes"):
            values[key] = _repeated(value, name, _key_hash)
        else:  # product
            values[key] = _product(value, name)
    if values.get("minimum_build", 0) > 255:
        raise PolicyError(f"policy.minimum_build is {values['minimum_build']}, expected 0-255")
    if values.get("policy"):
        try:
            parse_guest_policy(values["policy"])
        except ValueError as exc:
            raise PolicyError(f"policy.policy: {exc}") from exc
    return SnpPolicy(**values)


def parse_root_of_trust(document: Mapping[str, Any]) -> RootOfTrust:
    """Parse a ``check.RootOfTrust`` object (already decoded from JSON)."""
    known = (
        "product",
        "cabundle_paths",
        "cabundles",
        "check_crl",
        "disallow_network",
        "product_line",
    )
    doc = _canonical_keys(_mapping(document, "root_of_trust"), known, "root_of_trust")
    values: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"root_of_trust.{key}"
        if value is None:
            continue
        if key in ("product", "product_line"):
            text = _string(value, name).strip()
            if text:
                try:
                    normalize_product(text)
                except ValueError as exc:
                    raise PolicyError(f"{name} {text!r} is not one of {PRODUCTS}") from exc
            values[key] = text
        elif key in ("cabundle_paths", "cabundles"):
            if not isinstance(value, list):
                raise PolicyError(f"{name} must be a list of strings")
            values[key] = tuple(_string(v, f"{name}[{i}]") for i, v in enumerate(value))
        else:
            values[key] = _bool(value, name)
    return RootOfTrust(**values)


def parse_config(document: str | bytes | Mapping[str, Any]) -> SnpConfig:
    """Parse a ``check.Config`` document: JSON text or an already-decoded object
    with ``policy`` and ``root_of_trust`` (both optional)."""
    if isinstance(document, str | bytes):
        try:
            document = json.loads(document)
        except ValueError as exc:
            raise PolicyError(f"the policy document is not JSON: {exc}") from exc
    # pcr_values (Cocos' PCR reference values) is read by attestation.vtpm.policy.
    doc = _canonical_keys(
        _mapping(document, "config"), ("policy", "root_of_trust", "pcr_values"), "config"
    )
    policy = doc.get("policy")
    root = doc.get("root_of_trust")
    return SnpConfig(
        policy=parse_policy(policy) if policy is not None else SnpPolicy(),
        root_of_trust=parse_root_of_trust(root) if root is not None else RootOfTrust(),
    )


def sev_key_digest(certificate_der: bytes) -> bytes | None:
    """SHA-384 of a certificate's ECDSA P-384 public key in the SEV ABI format
    (0x404 bytes: curve 2, Qx and Qy 72 bytes little-endian, zero padding): what
    ID_KEY_DIGEST and AUTHOR_KEY_DIGEST hold. None for other key types, which
    go-sev-guest ignores too."""
    key = load_certificate(certificate_der, "trusted key certificate").public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        return None
    numbers = key.public_numbers()
    blob = bytearray(0x404)
    blob[0:4] = (2).to_bytes(4, "little")
    blob[0x04:0x4C] = numbers.x.to_bytes(72, "little")
    blob[0x4C:0x94] = numbers.y.to_bytes(72, "little")
    return hashlib.sha384(bytes(blob)).digest()
