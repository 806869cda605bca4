"""Evidence wrapped as Cocos' agent wraps it: an EAT whose claims are read
from the report (COSE_Sign1 ES256 over CBOR, or a JWT), signed by a key made
for the occasion. ``lies`` replaces claims, to make tokens that disagree with
their report."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from prism_backends.attestation.snp.abi import parse_report
from prism_backends.attestation.tdx.abi import parse_quote

ISSUER = "cocos-attestation-service"
_INT_KEYS = {"iss": 1, "exp": 4, "iat": 6, "eat_nonce": 10, "ueid": 256, "oemid": 258,
             "hwmodel": 259, "intuse": 262, "dbgstat": 263, "measurements": 265}  # fmt: skip


def claims_of(
    raw: bytes, nonce: bytes, platform_type: str, snp_report: bytes | None = None
) -> dict[str, Any]:
    """The claims Cocos' agent derives from a report or quote (for SEV-SNP +
    vTPM evidence, from the SNP report inside: ``snp_report``)."""
    claims: dict[str, Any] = {
        "iss": ISSUER, "iat": 1_700_000_000, "exp": 1_700_000_300, "eat_nonce": nonce,
        "dbgstat": 2, "intuse": 1, "platform_type": platform_type, "raw_report": raw,
    }  # fmt: skip
    if platform_type in ("SNP", "SNP-vTPM"):
        report = parse_report((snp_report or raw)[:0x4A0])
        claims.update(measurements=report.measurement, ueid=report.chip_id, oemid=3704)
        claims["x-cocos-sevsnp"] = {
            "measurement": report.measurement, "policy": report.policy,
            "family_id": report.family_id, "image_id": report.image_id, "vmpl": report.vmpl,
            "signature_algo": report.signature_algo, "platform_info": report.platform_info,
            "chip_id": report.chip_id, "current_tcb": report.current_tcb,
            "reported_tcb": report.reported_tcb, "committed_tcb": report.committed_tcb,
            "launch_tcb": report.launch_tcb,
            "tcb": f"current:{report.current_tcb},reported:{report.reported_tcb}",
        }  # fmt: skip
    elif platform_type == "TDX":
        body = parse_quote(raw).body
        claims.update(measurements=body.mr_td, ueid=body.mr_td[:32], oemid=343)
        claims["x-cocos-tdx"] = {
            "tdx_mrtd": body.mr_td,
            **{f"tdx_rtmr{i}": rtmr for i, rtmr in enumerate(body.rtmrs)},
            "tdx_xfam": int.from_bytes(body.xfam, "little"),
            "tdx_td_attributes": int.from_bytes(body.td_attributes, "little"),
            "tdx_mrseam": body.mr_seam,
        }
    return claims


def _with_lies(claims: dict[str, Any], lies: Mapping[str, Any]) -> dict[str, Any]:
    """``lies`` by dotted path: {"x-cocos-sevsnp.policy": 0}."""
    for path, value in lies.items():
        target = claims
        *parents, last = path.split(".")
        for parent in parents:
            target = target[parent]
        target[last] = value
    return claims


def cbor_eat(
    raw: bytes,
    nonce: bytes,
    platform_type: str = "SNP",
    lies: Mapping[str, Any] = {},
    snp_report: bytes | None = None,
) -> bytes:
    """A tagged COSE_Sign1 (ES256) over the CBOR claims, keys as Cocos encodes them."""
    claims = _with_lies(claims_of(raw, nonce, platform_type, snp_report), lies)
    payload = cbor2.dumps({_INT_KEYS.get(k, k): v for k, v in claims.items()})
    protected = cbor2.dumps({1: -7})  # alg: ES256
    to_sign = cbor2.dumps(["Signature1", protected, b"", payload])
    key = ec.generate_private_key(ec.SECP256R1())
    r, s = decode_dss_signature(key.sign(to_sign, ec.ECDSA(hashes.SHA256())))
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    message = [protected, {4: ISSUER.encode()}, payload, signature]
    return cbor2.dumps(cbor2.CBORTag(18, message))


def jwt_eat(
    raw: bytes,
    nonce: bytes,
    platform_type: str = "SNP",
    lies: Mapping[str, Any] = {},
    snp_report: bytes | None = None,
) -> bytes:
    """A JWT (ES256) with the same claims, byte strings as Go's base64."""
    import jwt

    claims = _with_lies(claims_of(raw, nonce, platform_type, snp_report), lies)
    key = ec.generate_private_key(ec.SECP256R1())
    return jwt.encode(_json(claims), key, algorithm="ES256").encode()


def _json(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    return value


def decoded(token: bytes) -> dict[str, Any]:
    """A JWT's claims, for tests that look inside."""
    body = token.split(b".")[1]
    result: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4)))
    return result
