"""Intel PCS collateral for TDX: what it is, where it lives, how it parses.

Collateral is four Intel Provisioning Certification Service responses: the
platform's TCB info (by FMSPC), the TD Quoting Enclave's identity, the PCK
CRL (of the platform or processor CA) and the SGX root CA's CRL. TCB info and
QE identity are JSON bodies ``{"tcbInfo": {...}, "signature": "<hex r||s>"}``
signed by the "Intel SGX TCB Signing" certificate, which Intel sends in a
response header (``TCB-Info-Issuer-Chain``, ``SGX-Enclave-Identity-Issuer-Chain``,
URL-encoded PEM); the signature covers the exact bytes of the inner JSON value,
so those bytes are kept as received.

Nothing here does I/O: :func:`fetch_collateral` goes through an injected
fetcher, and only when a caller asks.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeGuard, runtime_checkable

from prism_backends.attestation.common import CollateralUnavailable, Fetcher

PCS_TDX_BASE_URL = "https://api.trustedservices.intel.com/tdx/certification/v4"
PCS_SGX_BASE_URL = "https://api.trustedservices.intel.com/sgx/certification/v4"
ROOT_CRL_URL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"

TCB_INFO_ISSUER_CHAIN_HEADERS = ("TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain")
QE_IDENTITY_ISSUER_CHAIN_HEADERS = ("SGX-Enclave-Identity-Issuer-Chain",)

TCB_STATUSES = frozenset(
    {
        "UpToDate",
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
        "Revoked",
    }
)


@dataclass(frozen=True)
class Collateral:
    """Intel PCS responses for one platform, as received (bytes untouched).

    ``tcb_info`` and ``qe_identity`` are the JSON bodies; the issuer chains are
    the PEM chains (signing certificate, then root) from the response headers,
    URL-encoded or not; the CRLs are DER or PEM.
    """

    tcb_info: bytes
    tcb_info_issuer_chain: bytes
    qe_identity: bytes
    qe_identity_issuer_chain: bytes
    pck_crl: bytes
    root_crl: bytes


@runtime_checkable
class HeaderFetcher(Protocol):
    """A :class:`~prism_backends.attestation.common.Fetcher` that can also return
    response headers, needed for the signing chains of TCB info and QE identity."""

    def get(self, url: str) -> bytes:
        """The body at ``url``."""
        ...

    def get_with_headers(self, url: str) -> tuple[Mapping[str, str], bytes]:
        """The headers and body at ``url``."""
        ...


@dataclass(frozen=True)
class TcbLevel:
    """One TCB level of a TCB info: the minimum SVNs and Intel's verdict."""

    sgx_components: tuple[int, ...]  # 16
    pce_svn: int
    tdx_components: tuple[int, ...]  # 16
    tcb_date: str
    status: str
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True)
class EnclaveTcbLevel:
    """One TCB level of an enclave or TDX module identity, by ISV SVN."""

    isv_svn: int
    tcb_date: str
    status: str
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True)
class TdxModuleIdentity:
    """A TDX module identity (``TDX_<version>``) of TCB info v3."""

    id: str
    mr_signer: bytes  # 48
    attributes: bytes  # 8
    attributes_mask: bytes  # 8
    tcb_levels: tuple[EnclaveTcbLevel, ...]


@dataclass(frozen=True)
class TcbInfo:
    """A TDX TCB info (``id`` "TDX", version 3)."""

    id: str
    version: int
    issue_date: datetime
    next_update: datetime
    fmspc: bytes
    pce_id: bytes
    tcb_type: int
    tcb_evaluation_data_number: int
    tdx_module: TdxModuleIdentity  # the top-level "tdxModule" (id "", no levels)
    tdx_module_identities: tuple[TdxModuleIdentity, ...]
    tcb_levels: tuple[TcbLevel, ...]


@dataclass(frozen=True)
class QeIdentity:
    """The TD Quoting Enclave's identity (``id`` "TD_QE", version 2)."""

    id: str
    version: int
    issue_date: datetime
    next_update: datetime
    tcb_evaluation_data_number: int
    misc_select: bytes  # 4, in report byte order
    misc_select_mask: bytes  # 4
    attributes: bytes  # 16
    attributes_mask: bytes  # 16
    mr_signer: bytes  # 32
    isv_prod_id: int
    tcb_levels: tuple[EnclaveTcbLevel, ...]


@dataclass(frozen=True)
class SignedJson:
    """A PCS JSON body split into the signed value's exact bytes, the value and
    the signature (r || s)."""

    signed_bytes: bytes
    value: Any
    signature: bytes


def tcb_info_url(fmspc: bytes) -> str:
    """Intel PCS URL of the TDX TCB info for an FMSPC."""
    return f"{PCS_TDX_BASE_URL}/tcb?fmspc={fmspc.hex()}"


def qe_identity_url() -> str:
    """Intel PCS URL of the TD Quoting Enclave identity."""
    return f"{PCS_TDX_BASE_URL}/qe/identity"


def pck_crl_url(ca: str) -> str:
    """Intel PCS URL of the PCK CRL of the ``platform`` or ``processor`` CA, in DER."""
    if ca not in ("platform", "processor"):
        raise ValueError(f"PCK CA must be 'platform' or 'processor', not {ca!r}")
    return f"{PCS_SGX_BASE_URL}/pckcrl?ca={ca}&encoding=der"


def fetch_collateral(
    fetcher: Fetcher, *, fmspc: bytes, ca: str, root_crl_url: str = ROOT_CRL_URL
) -> Collateral:
    """Fetch a platform's collateral from Intel PCS through ``fetcher``.

    The fetcher must be a :class:`HeaderFetcher`: TCB info and QE identity are
    signed by a certificate PCS sends only in a response header. Any failure
    is :class:`CollateralUnavailable`.
    """
    if not _has_headers(fetcher):
        raise CollateralUnavailable(
            "TCB info and QE identity are signed by a certificate Intel PCS sends in a"
            " response header; the fetcher returns bodies only (give one with"
            " get_with_headers, or pass the collateral)"
        )
    tcb_headers, tcb_info = _fetch_with_headers(fetcher, tcb_info_url(fmspc))
    qe_headers, qe_identity = _fetch_with_headers(fetcher, qe_identity_url())
    return Collateral(
        tcb_info=tcb_info,
        tcb_info_issuer_chain=_header(tcb_headers, TCB_INFO_ISSUER_CHAIN_HEADERS),
        qe_identity=qe_identity,
        qe_identity_issuer_chain=_header(qe_headers, QE_IDENTITY_ISSUER_CHAIN_HEADERS),
        pck_crl=_fetch(fetcher, pck_crl_url(ca)),
        root_crl=_fetch(fetcher, root_crl_url),
    )


def _has_headers(fetcher: Fetcher) -> TypeGuard[HeaderFetcher]:
    # What isinstance() against the runtime-checkable protocol checks, without
    # its walk over the protocol's members on every call (slow before 3.12).
    return callable(getattr(fetcher, "get_with_headers", None))


def issuer_chain_pem(chain: bytes) -> bytes:
    """A PCS issuer chain as PEM, URL-decoding it when it arrived encoded."""
    if b"%" in chain:
        return urllib.parse.unquote_to_bytes(chain)
    return chain


def split_signed_json(body: bytes, key: str, what: str) -> SignedJson:
    """Split a PCS body ``{key: {...}, "signature": "<hex>"}``, keeping the exact
    bytes of the value under ``key`` (what the signature covers). Duplicate keys,
    trailing data or a signature that is not 64 bytes of hex are refused."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _malformed(what, "not UTF-8") from exc
    decoder = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    spans: dict[str, tuple[int, int]] = {}
    values: dict[str, Any] = {}
    index = _skip_space(text, 0)
    if not text.startswith("{", index):
        raise _malformed(what, "not a JSON object")
    index = _skip_space(text, index + 1)
    try:
        while not text.startswith("}", index):
            if not text.startswith('"', index):
                raise _malformed(what, "expected a key")
            name, index = json.decoder.scanstring(text, index + 1)  # type: ignore[attr-defined]
            index = _skip_space(text, index)
            if not text.startswith(":", index):
                raise _malformed(what, "expected ':'")
            start = _skip_space(text, index + 1)
            value, end = decoder.raw_decode(text, start)
            if name in values:
                raise _malformed(what, f"key {name!r} appears twice")
            values[name], spans[name] = value, (start, end)
            index = _skip_space(text, end)
            if text.startswith(",", index):
                index = _skip_space(text, index + 1)
                if text.startswith("}", index):
                    raise _malformed(what, "trailing comma")
            elif not text.startswith("}", index):
                raise _malformed(what, "expected ',' or '}'")
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise _malformed(what, f"bad JSON ({exc})") from exc
    if _skip_space(text, index + 1) != len(text):
        raise _malformed(what, "data after the JSON object")
    if key not in values or "signature" not in values:
        raise _malformed(what, f"needs {key!r} and 'signature'")
    signature = values["signature"]
    if not isinstance(signature, str) or len(signature) != 128:
        raise _malformed(what, "signature is not 64 bytes of hex")
    start, end = spans[key]
    return SignedJson(
        signed_bytes=text[start:end].encode("utf-8"),
        value=values[key],
        signature=_hex(signature, what, "signature", 64),
    )


def parse_tcb_info(value: Any) -> TcbInfo:
    """Parse the ``tcbInfo`` value of a TDX TCB info body."""
    what = "TCB info"
    obj = _object(value, what)
    module = _object(obj.get("tdxModule"), what + " tdxModule")
    identities = obj.get("tdxModuleIdentities", [])
    return TcbInfo(
        id=_str(obj, "id", what),
        version=_int(obj, "version", what),
        issue_date=_date(obj, "issueDate", what),
        next_update=_date(obj, "nextUpdate", what),
        fmspc=_hex(_str(obj, "fmspc", what), what, "fmspc", 6),
        pce_id=_hex(_str(obj, "pceId", what), what, "pceId", 2),
        tcb_type=_int(obj, "tcbType", what),
        tcb_evaluation_data_number=_int(obj, "tcbEvaluationDataNumber", what),
        tdx_module=TdxModuleIdentity(
            id="",
            mr_signer=_hex(_str(module, "mrsigner", what), what, "tdxModule.mrsigner", 48),
            attributes=_hex(_str(module, "attributes", what), what, "tdxModule.attributes", 8),
            attributes_mask=_hex(
                _str(module, "attributesMask", what), what, "tdxModule.attributesMask", 8
            ),
            tcb_levels=(),
        ),
        tdx_module_identities=tuple(
            _module_identity(item) for item in _list(identities, what + " tdxModuleIdentities")
        ),
        tcb_levels=tuple(_tcb_level(item) for item in _list(obj.get("tcbLevels"), what)),
    )


def parse_qe_identity(value: Any) -> QeIdentity:
    """Parse the ``enclaveIdentity`` value of a QE identity body."""
    what = "QE identity"
    obj = _object(value, what)
    return QeIdentity(
        id=_str(obj, "id", what),
        version=_int(obj, "version", what),
        issue_date=_date(obj, "issueDate", what),
        next_update=_date(obj, "nextUpdate", what),
        tcb_evaluation_data_number=_int(obj, "tcbEvaluationDataNumber", what),
        misc_select=_hex(_str(obj, "miscselect", what), what, "miscselect", 4),
        misc_select_mask=_hex(_str(obj, "miscselectMask", what), what, "miscselectMask", 4),
        attributes=_hex(_str(obj, "attributes", what), what, "attributes", 16),
        attributes_mask=_hex(_str(obj, "attributesMask", what), what, "attributesMask", 16),
        mr_signer=_hex(_str(obj, "mrsigner", what), what, "mrsigner", 32),
        isv_prod_id=_int(obj, "isvprodid", what),
        tcb_levels=tuple(_enclave_level(item, what) for item in _list(obj.get("tcbLevels"), what)),
    )


def _module_identity(value: Any) -> TdxModuleIdentity:
    what = "TCB info tdxModuleIdentity"
    obj = _object(value, what)
    return TdxModuleIdentity(
        id=_str(obj, "id", what),
        mr_signer=_hex(_str(obj, "mrsigner", what), what, "mrsigner", 48),
        attributes=_hex(_str(obj, "attributes", what), what, "attributes", 8),
        attributes_mask=_hex(_str(obj, "attributesMask", what), what, "attributesMask", 8),
        tcb_levels=tuple(_enclave_level(item, what) for item in _list(obj.get("tcbLevels"), what)),
    )


def _tcb_level(value: Any) -> TcbLevel:
    what = "TCB info tcbLevel"
    obj = _object(value, what)
    tcb = _object(obj.get("tcb"), what + " tcb")
    return TcbLevel(
        sgx_components=_components(tcb.get("sgxtcbcomponents"), what + " sgxtcbcomponents"),
        pce_svn=_int(tcb, "pcesvn", what),
        tdx_components=_components(tcb.get("tdxtcbcomponents"), what + " tdxtcbcomponents"),
        tcb_date=_str(obj, "tcbDate", what),
        status=_status(obj, what),
        advisory_ids=_advisories(obj, what),
    )


def _enclave_level(value: Any, what: str) -> EnclaveTcbLevel:
    obj = _object(value, what + " tcbLevel")
    tcb = _object(obj.get("tcb"), what + " tcbLevel tcb")
    return EnclaveTcbLevel(
        isv_svn=_int(tcb, "isvsvn", what),
        tcb_date=_str(obj, "tcbDate", what),
        status=_status(obj, what),
        advisory_ids=_advisories(obj, what),
    )


def _components(value: Any, what: str) -> tuple[int, ...]:
    items = _list(value, what)
    if len(items) != 16:
        raise _malformed(what, f"has {len(items)} entries, expected 16")
    svns = tuple(_int(_object(item, what), "svn", what) for item in items)
    if any(svn > 0xFF for svn in svns):
        raise _malformed(what, "an SVN exceeds 255")
    return svns


def _status(obj: Mapping[str, Any], what: str) -> str:
    status = _str(obj, "tcbStatus", what)
    if status not in TCB_STATUSES:
        raise _malformed(what, f"unknown tcbStatus {status!r}")
    return status


def _advisories(obj: Mapping[str, Any], what: str) -> tuple[str, ...]:
    items = _list(obj.get("advisoryIDs", []), what + " advisoryIDs")
    if not all(isinstance(item, str) for item in items):
        raise _malformed(what, "advisoryIDs are not strings")
    return tuple(items)


def _object(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _malformed(what, "is not a JSON object")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise _malformed(what, "is not a JSON list")
    return value


def _str(obj: Mapping[str, Any], key: str, what: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise _malformed(what, f"{key!r} is missing or not a string")
    return value


def _int(obj: Mapping[str, Any], key: str, what: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _malformed(what, f"{key!r} is missing or not a non-negative integer")
    return value


def _date(obj: Mapping[str, Any], key: str, what: str) -> datetime:
    text = _str(obj, key, what)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise _malformed(what, f"{key!r} is not an ISO 8601 date") from exc
    if moment.tzinfo is None:
        raise _malformed(what, f"{key!r} has no time zone")
    return moment


def _hex(text: str, what: str, field: str, size: int) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError as exc:
        raise _malformed(what, f"{field} is not hex") from exc
    if len(value) != size or len(text) != 2 * size:
        raise _malformed(what, f"{field} is {len(value)} bytes, expected {size}")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"key {key!r} appears twice")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _skip_space(text: str, index: int) -> int:
    while index < len(text) and text[index] in " \t\r\n":
        index += 1
    return index


def _malformed(what: str, detail: str) -> CollateralUnavailable:
    return CollateralUnavailable(f"{what} is malformed: {detail}")


def _fetch(fetcher: Fetcher, url: str) -> bytes:
    try:
        return fetcher.get(url)
    except CollateralUnavailable:
        raise
    except Exception as exc:
        raise CollateralUnavailable(f"could not fetch {url}: {exc}") from exc


def _fetch_with_headers(fetcher: HeaderFetcher, url: str) -> tuple[Mapping[str, str], bytes]:
    try:
        return fetcher.get_with_headers(url)
    except CollateralUnavailable:
        raise
    except Exception as exc:
        raise CollateralUnavailable(f"could not fetch {url}: {exc}") from exc


def _header(headers: Mapping[str, str], names: tuple[str, ...]) -> bytes:
    lowered = {key.lower(): value for key, value in headers.items()}
    for name in names:
        if name.lower() in lowered:
            return lowered[name.lower()].encode("ascii", "replace")
    raise CollateralUnavailable(f"Intel PCS response lacks the {names[0]} header")
