"""Entity Attestation Tokens (RFC 9711) as today's Cocos agent wraps its
evidence: a COSE_Sign1 over a CBOR claims map (the default), or a JWT with the
same claims. Pure: bytes in, claims and check failures out.

The token is signed by a key the agent makes at start, so its signature
proves nothing and is not checked. What counts is ``raw_report``, the
hardware evidence, verified in its own right by the caller; the claims beside
it are only accepted when they agree with that verified report.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cbor2

from prism_backends.attestation.common import CheckFailure, MalformedEvidence
from prism_backends.attestation.snp.abi import REPORT_SIZE, parse_report
from prism_backends.attestation.tdx.abi import parse_quote

COSE_SIGN1_TAG = 18
# CWT / EAT claim keys (RFC 8392, RFC 9711) as names.
CLAIM_NAMES = {
    1: "iss",
    2: "sub",
    4: "exp",
    6: "iat",
    10: "eat_nonce",
    256: "ueid",
    258: "oemid",
    259: "hwmodel",
    260: "hwversion",
    262: "intuse",
    263: "dbgstat",
    265: "measurements",
    266: "submods",
    270: "swname",
    271: "swversion",
}
SNP_CLAIMS, TDX_CLAIMS, VTPM_CLAIMS = "x-cocos-sevsnp", "x-cocos-tdx", "x-cocos-vtpm"
# Claims whose JSON (JWT) form is base64, as Go encodes byte strings.
_BYTE_CLAIMS = {
    "raw_report", "eat_nonce", "ueid", "hwmodel", "measurements",
    "measurement", "family_id", "image_id", "chip_id", "signature",
    "tdx_mrtd", "tdx_rtmr0", "tdx_rtmr1", "tdx_rtmr2", "tdx_rtmr3", "tdx_mrconfigid",
    "tdx_mrowner", "tdx_mrownerconfig", "tdx_mrseam", "tdx_signature", "event_log", "quote",
}  # fmt: skip
PLATFORMS = {"SNP": "sev-snp", "SNP-vTPM": "sev-snp", "TDX": "tdx"}
_JWT = re.compile(rb"^[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class Eat:
    """A decoded EAT: its form (``cbor`` or ``jwt``) and its claims, byte
    strings as bytes whichever the form."""

    form: str
    claims: Mapping[str, Any] = field(repr=False)

    @property
    def raw_report(self) -> bytes:
        return bytes(self.claims.get("raw_report") or b"")

    @property
    def platform_type(self) -> str:
        return str(self.claims.get("platform_type", ""))

    @property
    def nonce(self) -> bytes:
        return bytes(self.claims.get("eat_nonce") or b"")

    def summary(self) -> dict[str, Any]:
        """The claims a verdict reports: everything but the evidence itself."""
        return {k: _printable(v) for k, v in self.claims.items() if k != "raw_report"}


def looks_like_eat(raw: bytes) -> bool:
    """A COSE_Sign1 (tagged or not) or a JWT, by its first bytes."""
    if raw[:2] == b"\xd2\x84":  # tag 18, an array of four
        return True
    if len(raw) > 1 and raw[0] == 0x84 and 0x40 <= raw[1] <= 0x5F:  # untagged: bstr first
        return True
    return bool(_JWT.fullmatch(raw.strip()))


def parse(raw: bytes) -> Eat | None:
    """The EAT in ``raw``; None when ``raw`` is not one (a bare report or quote).
    Raises ``MalformedEvidence`` for a token that cannot be read."""
    if not looks_like_eat(raw):
        return None
    text = raw.strip()
    if _JWT.fullmatch(text):
        claims = _jwt_claims(text)
        form = "jwt"
    else:
        claims = _cose_claims(raw)
        form = "cbor"
    if not isinstance(claims.get("raw_report"), bytes) or not claims["raw_report"]:
        raise MalformedEvidence("the EAT carries no raw_report (the hardware evidence)")
    return Eat(form=form, claims=claims)


def _cose_claims(raw: bytes) -> dict[str, Any]:
    try:
        message = cbor2.loads(raw)
    except (cbor2.CBORDecodeError, ValueError, TypeError, EOFError) as exc:
        raise MalformedEvidence(f"the EAT is not valid CBOR: {exc}") from None
    if isinstance(message, cbor2.CBORTag):
        if message.tag != COSE_SIGN1_TAG:
            raise MalformedEvidence(f"the EAT is CBOR tag {message.tag}, not COSE_Sign1 (18)")
        message = message.value
    if not (
        isinstance(message, list | tuple) and len(message) == 4 and isinstance(message[2], bytes)
    ):
        raise MalformedEvidence("the EAT is not a COSE_Sign1 with a payload")
    try:
        payload = cbor2.loads(message[2])
    except (cbor2.CBORDecodeError, ValueError, TypeError, EOFError) as exc:
        raise MalformedEvidence(f"the EAT's claims are not valid CBOR: {exc}") from None
    if not isinstance(payload, dict):
        raise MalformedEvidence("the EAT's claims are not a CBOR map")
    return {
        CLAIM_NAMES.get(k, str(k)) if isinstance(k, int) else str(k): v for k, v in payload.items()
    }


def _jwt_claims(text: bytes) -> dict[str, Any]:
    try:
        _header, body, _signature = text.split(b".")
        claims = json.loads(base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4)))
    except (ValueError, binascii.Error) as exc:
        raise MalformedEvidence(f"the EAT is not a readable JWT: {exc}") from None
    if not isinstance(claims, dict):
        raise MalformedEvidence("the EAT's claims are not a JSON object")
    decoded: dict[str, Any] = _decoded_bytes(claims)
    return decoded


def _decoded_bytes(value: Any, key: str = "") -> Any:
    """JSON claims with Go's base64 byte strings back as bytes."""
    if isinstance(value, dict):
        return {k: _decoded_bytes(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_decoded_bytes(v, key) for v in value]
    if key in _BYTE_CLAIMS and isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise MalformedEvidence(f"the EAT's {key} is not base64") from None
    return value


def contradictions(
    eat: Eat, platform: str, nonces: Sequence[bytes] = (), report: bytes | None = None
) -> list[CheckFailure]:
    """Where the token's claims disagree with its (verified) report (``report``,
    or else its ``raw_report``), or its nonce is not one of ``nonces`` (when
    given): one failure per claim."""
    truth_source = eat.raw_report if report is None else report
    failures = []
    expected_platform = PLATFORMS.get(eat.platform_type)
    if expected_platform != platform:
        failures.append(CheckFailure("platform_type", platform, eat.platform_type or "(none)"))
    if nonces and eat.nonce not in nonces:
        wanted = " or ".join(n.hex() for n in nonces)
        failures.append(CheckFailure("eat_nonce", wanted, eat.nonce.hex() or "(none)"))
    if platform == "sev-snp":
        failures += _compare(eat.claims, _snp_truth(truth_source))
    elif platform == "tdx":
        failures += _compare(eat.claims, _tdx_truth(truth_source))
    return failures


def _snp_truth(raw: bytes) -> dict[str, Any]:
    report = parse_report(raw[:REPORT_SIZE])  # a certificate table may follow
    return {
        "measurements": report.measurement,
        "ueid": report.chip_id,
        SNP_CLAIMS: {
            "measurement": report.measurement,
            "policy": report.policy,
            "family_id": report.family_id,
            "image_id": report.image_id,
            "vmpl": report.vmpl,
            "signature_algo": report.signature_algo,
            "platform_info": report.platform_info,
            "chip_id": report.chip_id,
            "current_tcb": report.current_tcb,
            "reported_tcb": report.reported_tcb,
            "committed_tcb": report.committed_tcb,
            "launch_tcb": report.launch_tcb,
        },
    }


def _tdx_truth(raw: bytes) -> dict[str, Any]:
    body = parse_quote(raw).body
    truth: dict[str, Any] = {
        "measurements": body.mr_td,
        "tdx_mrtd": body.mr_td,
        "tdx_xfam": int.from_bytes(body.xfam, "little"),
        "tdx_td_attributes": int.from_bytes(body.td_attributes, "little"),
        "tdx_mrseam": body.mr_seam,
        "tdx_mrconfigid": body.mr_config_id,
        "tdx_mrowner": body.mr_owner,
        "tdx_mrownerconfig": body.mr_owner_config,
    }
    for index, rtmr in enumerate(body.rtmrs):
        truth[f"tdx_rtmr{index}"] = rtmr
    return {"measurements": body.mr_td, TDX_CLAIMS: truth}


def _compare(
    claims: Mapping[str, Any], truth: Mapping[str, Any], prefix: str = ""
) -> list[CheckFailure]:
    """Each claim present in both that differs. Claims the token leaves out
    (Cocos omits zero values) are not contradictions."""
    failures = []
    for key, actual in truth.items():
        if key not in claims or claims[key] is None:
            continue
        claimed = claims[key]
        name = f"{prefix}{key}"
        if isinstance(actual, Mapping):
            if isinstance(claimed, Mapping):
                failures += _compare(claimed, actual, f"{name}.")
            else:
                failures.append(CheckFailure(name, "a map", type(claimed).__name__))
        elif _normal(claimed) != _normal(actual):
            failures.append(
                CheckFailure(f"{name} (claimed)", _printable(actual), _printable(claimed))
            )
    return failures


def _normal(value: Any) -> Any:
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, bool):
        return int(value)
    return value


def _printable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): _printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_printable(v) for v in value]
    if isinstance(value, cbor2.CBORTag):
        return {"tag": value.tag, "value": _printable(value.value)}
    return value
