"""go-tdx-guest's ``checkconfig.Config`` as JSON, parsed strictly.

The document is protobuf JSON of ``proto/checkconfig.proto``::

    {"root_of_trust": {"cabundle_paths": [...], "cabundles": [...],
                       "check_crl": false, "get_collateral": false},
     "policy": {"header_policy": {"minimum_qe_svn": 0, "minimum_pce_svn": 0,
                                  "qe_vendor_id": "<bytes>"},
                "td_quote_body_policy": {"minimum_tee_tcb_svn": "<16>",
                    "mr_seam": "<48>", "td_attributes": "<8>", "xfam": "<8>",
                    "mr_td": "<48>", "mr_config_id": "<48>", "mr_owner": "<48>",
                    "mr_owner_config": "<48>", "rtmrs": ["<48>" x 4],
                    "report_data": "<64>", "any_mr_td": ["<48>", ...],
                    "tdattributes_debug": true|false,
                    "minimum_tee_tcb_svn2": "<16>", "mr_service_td": "<48>"}}}

Keys may be snake_case (proto names) or lowerCamelCase (JSON names), as
protojson accepts; giving both for one field, duplicate keys or unknown keys
are refused with :class:`PolicyError` naming them. Bytes are base64 (standard
or URL-safe, padded or not, as protojson reads them) or hex (as go-tdx-guest's
command-line flags take them): a string of exactly twice the field's size in
hex digits is hex, anything else must be base64 of the field's size. An empty
string or ``null`` leaves a field unset (proto3); numbers may be JSON numbers
or decimal strings. SVN minimums above 65535 are refused, as go-tdx-guest does.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prism_backends.attestation.common import PolicyError

_HEX = re.compile(r"[0-9a-fA-F]*")
_BASE64 = re.compile(r"[A-Za-z0-9+/\-_]*={0,2}")


@dataclass(frozen=True)
class HeaderPolicy:
    """Expectations on the quote header; zero or None means unchecked."""

    minimum_qe_svn: int = 0
    minimum_pce_svn: int = 0
    qe_vendor_id: bytes | None = None


@dataclass(frozen=True)
class TdQuoteBodyPolicy:
    """Expectations on the TD quote body; None (or empty) means unchecked."""

    minimum_tee_tcb_svn: bytes | None = None
    mr_seam: bytes | None = None
    td_attributes: bytes | None = None
    xfam: bytes | None = None
    mr_td: bytes | None = None
    mr_config_id: bytes | None = None
    mr_owner: bytes | None = None
    mr_owner_config: bytes | None = None
    rtmrs: tuple[bytes | None, ...] | None = None  # four entries; None entries unchecked
    report_data: bytes | None = None
    any_mr_td: tuple[bytes, ...] = ()
    tdattributes_debug: bool | None = None
    minimum_tee_tcb_svn2: bytes | None = None
    mr_service_td: bytes | None = None


@dataclass(frozen=True)
class Policy:
    """A quote validation policy (``checkconfig.Policy``)."""

    header_policy: HeaderPolicy = field(default_factory=HeaderPolicy)
    td_quote_body_policy: TdQuoteBodyPolicy = field(default_factory=TdQuoteBodyPolicy)


@dataclass(frozen=True)
class RootOfTrust:
    """Which roots to trust and whether to use collateral (``checkconfig.RootOfTrust``).

    Paths are only carried here; reading them is the caller's business."""

    cabundle_paths: tuple[str, ...] = ()
    cabundles: tuple[str, ...] = ()
    check_crl: bool = False
    get_collateral: bool = False


@dataclass(frozen=True)
class Config:
    """A whole ``checkconfig.Config``."""

    policy: Policy = field(default_factory=Policy)
    root_of_trust: RootOfTrust = field(default_factory=RootOfTrust)


def parse_config(document: str | bytes | Mapping[str, Any]) -> Config:
    """Parse a ``checkconfig.Config`` (JSON text or an already-decoded object)."""
    obj = _fields(_load(document), "config", {"policy": _message, "root_of_trust": _message})
    return Config(
        policy=_policy(obj.get("policy"), "policy"),
        root_of_trust=_root_of_trust(obj.get("root_of_trust"), "root_of_trust"),
    )


def parse_policy(document: str | bytes | Mapping[str, Any]) -> Policy:
    """Parse a ``checkconfig.Policy`` alone (the ``policy`` member of a config)."""
    return _policy(_load(document), "policy")


def decode_bytes(value: str, size: int, path: str) -> bytes:
    """Decode a bytes field of ``size`` bytes given as hex or base64 (see module doc)."""
    if len(value) == 2 * size and _HEX.fullmatch(value):
        return bytes.fromhex(value)
    if not _BASE64.fullmatch(value):
        raise PolicyError(f"{path}: not base64 or hex")
    standard = value.replace("-", "+").replace("_", "/").rstrip("=")
    try:
        decoded = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except binascii.Error as exc:
        raise PolicyError(f"{path}: not base64 or hex ({exc})") from exc
    if len(decoded) != size:
        raise PolicyError(
            f"{path}: must be {size} bytes (base64, or {2 * size} hex digits), got {len(decoded)}"
        )
    return decoded


# --- messages ---------------------------------------------------------------

_Reader = Callable[[Any, str], Any]


def _policy(value: Any, path: str) -> Policy:
    if value is None:
        return Policy()
    obj = _fields(value, path, {"header_policy": _message, "td_quote_body_policy": _message})
    return Policy(
        header_policy=_header_policy(obj.get("header_policy"), path + ".header_policy"),
        td_quote_body_policy=_body_policy(
            obj.get("td_quote_body_policy"), path + ".td_quote_body_policy"
        ),
    )


def _header_policy(value: Any, path: str) -> HeaderPolicy:
    if value is None:
        return HeaderPolicy()
    obj = _fields(
        value,
        path,
        {"minimum_qe_svn": _svn, "minimum_pce_svn": _svn, "qe_vendor_id": _sized(16)},
    )
    return HeaderPolicy(
        minimum_qe_svn=obj.get("minimum_qe_svn") or 0,
        minimum_pce_svn=obj.get("minimum_pce_svn") or 0,
        qe_vendor_id=obj.get("qe_vendor_id"),
    )


def _body_policy(value: Any, path: str) -> TdQuoteBodyPolicy:
    if value is None:
        return TdQuoteBodyPolicy()
    obj = _fields(
        value,
        path,
        {
            "minimum_tee_tcb_svn": _sized(16),
            "mr_seam": _sized(48),
            "td_attributes": _sized(8),
            "xfam": _sized(8),
            "mr_td": _sized(48),
            "mr_config_id": _sized(48),
            "mr_owner": _sized(48),
            "mr_owner_config": _sized(48),
            "rtmrs": _rtmrs,
            "report_data": _sized(64),
            "any_mr_td": _any_mr_td,
            "tdattributes_debug": _bool,
            "minimum_tee_tcb_svn2": _sized(16),
            "mr_service_td": _sized(48),
        },
    )
    return TdQuoteBodyPolicy(
        minimum_tee_tcb_svn=obj.get("minimum_tee_tcb_svn"),
        mr_seam=obj.get("mr_seam"),
        td_attributes=obj.get("td_attributes"),
        xfam=obj.get("xfam"),
        mr_td=obj.get("mr_td"),
        mr_config_id=obj.get("mr_config_id"),
        mr_owner=obj.get("mr_owner"),
        mr_owner_config=obj.get("mr_owner_config"),
        rtmrs=obj.get("rtmrs"),
        report_data=obj.get("report_data"),
        any_mr_td=obj.get("any_mr_td") or (),
        tdattributes_debug=obj.get("tdattributes_debug"),
        minimum_tee_tcb_svn2=obj.get("minimum_tee_tcb_svn2"),
        mr_service_td=obj.get("mr_service_td"),
    )


def _root_of_trust(value: Any, path: str) -> RootOfTrust:
    if value is None:
        return RootOfTrust()
    obj = _fields(
        value,
        path,
        {
            "cabundle_paths": _strings,
            "cabundles": _strings,
            "check_crl": _bool,
            "get_collateral": _bool,
        },
    )
    return RootOfTrust(
        cabundle_paths=obj.get("cabundle_paths") or (),
        cabundles=obj.get("cabundles") or (),
        check_crl=bool(obj.get("check_crl")),
        get_collateral=bool(obj.get("get_collateral")),
    )


# --- fields -----------------------------------------------------------------


def _load(document: str | bytes | Mapping[str, Any]) -> Any:
    if isinstance(document, Mapping):
        return document
    try:
        return json.loads(document, object_pairs_hook=_unique_keys)
    except PolicyError:
        raise
    except ValueError as exc:
        raise PolicyError(f"policy is not valid JSON: {exc}") from exc


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise PolicyError(f"key {key!r} appears twice")
        result[key] = value
    return result


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _fields(value: Any, path: str, readers: Mapping[str, _Reader]) -> dict[str, Any]:
    """Read a message: map snake_case or camelCase keys to fields, refuse unknown
    keys (all named) and fields given twice; ``null`` values leave fields unset."""
    if not isinstance(value, Mapping):
        raise PolicyError(f"{path}: must be a JSON object")
    names = {name: name for name in readers} | {_camel(name): name for name in readers}
    unknown = sorted(key for key in value if key not in names)
    if unknown:
        raise PolicyError(f"{path}: unknown key(s) {', '.join(map(repr, unknown))}")
    result: dict[str, Any] = {}
    seen: dict[str, str] = {}
    for key, item in value.items():
        name = names[key]
        if name in seen:
            raise PolicyError(f"{path}: {name!r} is given twice ({seen[name]!r} and {key!r})")
        seen[name] = key
        if item is not None:
            result[name] = readers[name](item, f"{path}.{name}")
    return result


def _message(value: Any, path: str) -> Any:
    return value  # parsed by its own reader, which checks the type


def _sized(size: int) -> _Reader:
    def read(value: Any, path: str) -> bytes | None:
        if not isinstance(value, str):
            raise PolicyError(f"{path}: must be a string of base64 or hex")
        return decode_bytes(value, size, path) if value else None

    return read


def _svn(value: Any, path: str) -> int:
    number: int
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise PolicyError(f"{path}: must be an unsigned integer")
    if isinstance(value, str):
        if not value.isdigit() or not value.isascii():
            raise PolicyError(f"{path}: {value!r} is not an unsigned integer")
        number = int(value)
    else:
        number = value
    if not 0 <= number < 1 << 32:
        raise PolicyError(f"{path}: {number} is not a uint32")
    if number > 0xFFFF:
        raise PolicyError(f"{path} is {number}; expect 0-65535")
    return number


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise PolicyError(f"{path}: must be true or false")
    return value


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise PolicyError(f"{path}: must be a JSON list")
    return value


def _strings(value: Any, path: str) -> tuple[str, ...]:
    items = _list(value, path)
    if not all(isinstance(item, str) for item in items):
        raise PolicyError(f"{path}: must be a list of strings")
    return tuple(items)


def _rtmrs(value: Any, path: str) -> tuple[bytes | None, ...] | None:
    items = _list(value, path)
    if not items:
        return None
    if len(items) != 4:
        raise PolicyError(f"{path}: has {len(items)} entries; want 4 (empty ones are unchecked)")
    read = _sized(48)
    return tuple(read(item, f"{path}[{index}]") for index, item in enumerate(items))


def _any_mr_td(value: Any, path: str) -> tuple[bytes, ...]:
    read = _sized(48)
    result = []
    for index, item in enumerate(_list(value, path)):
        decoded = read(item, f"{path}[{index}]")
        if decoded is None:
            raise PolicyError(f"{path}[{index}]: an empty MR_TD would match nothing")
        result.append(decoded)
    return tuple(result)
