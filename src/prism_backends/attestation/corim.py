"""CoRIM attestation policies (draft-ietf-rats-corim), as Cocos' manager serves
them and ``cocos-cli`` takes them: an unsigned CoRIM (``#6.501``) or one
signed in a COSE_Sign1 (``#6.18``), holding CoMIDs (``#6.506``) whose reference
triples name an environment and its measurements. Pure.

Reference values are read two ways, as the two makers write them:
- measurements keyed by name (``launch_measurement``/``measurement``,
  ``guest_policy``, ``host_data``, ``launch_tcb``; ``mr_td``, ``mr_seam``,
  ``rtmr0``..``rtmr3``, ``xfam``, ``td_attributes``), values as digests
  (``mval`` 2), raw values (``#6.560``) or integers;
- measurements keyed by UUID, as Cocos' ``corimgen`` writes them: known by
  position (SEV-SNP: the measurement; TDX: MRTD, MRSEAM, then RTMR0-3), with
  the SVN (``mval`` 1) as the minimum guest SVN and the environment's
  instance UUID naming the product (UUIDv5 of its name in the OID namespace).

A CoRIM becomes the go-sev-guest / go-tdx-guest JSON policy the appraisal
already applies (``to_policy_json``), and such JSON a CoRIM (``from_policy_json``)
where every check it holds can be expressed; what cannot is named.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from prism_backends.attestation.common import PolicyError

TAG_SIGN1, TAG_UNSIGNED, TAG_COMID, TAG_UUID, TAG_RAW = 18, 501, 506, 37, 560
SHA256_ALG, SHA384_ALG = 1, 7  # named-information hash algorithm registry
PRODUCTS = ("Milan", "Genoa", "Turin")
PRODUCT_UUIDS = {str(uuid.uuid5(uuid.NAMESPACE_OID, name)): name for name in PRODUCTS}
COSE_ALGS: dict[int, type[hashes.HashAlgorithm]] = {
    -7: hashes.SHA256,
    -35: hashes.SHA384,
    -36: hashes.SHA512,
}
SNP_NAMES = {
    "launch_measurement": "measurement",
    "measurement": "measurement",
    "guest_policy": "policy",
    "policy": "policy",
    "host_data": "host_data",
    "launch_tcb": "minimum_launch_tcb",
    "minimum_launch_tcb": "minimum_launch_tcb",
}
TDX_NAMES = {"mr_td": "mr_td", "mrtd": "mr_td", "mr_seam": "mr_seam", "mrseam": "mr_seam",
             "rtmr0": "rtmr0", "rtmr1": "rtmr1", "rtmr2": "rtmr2", "rtmr3": "rtmr3",
             "xfam": "xfam", "td_attributes": "td_attributes"}  # fmt: skip
TDX_POSITIONS = ("mr_td", "mr_seam", "rtmr0", "rtmr1", "rtmr2", "rtmr3")
WITHOUT_GUEST_POLICY = 0x70000  # SMT (bit 16), reserved (17), MIGRATE_MA (18); not DEBUG (19)


def is_corim(document: bytes) -> bool:
    """A CBOR CoRIM, signed or not (JSON policies start with ``{``)."""
    return document[:3] == b"\xd9\x01\xf5" or document[:2] == b"\xd2\x84"


@dataclass(frozen=True)
class Reference:
    """The reference values a CoRIM holds, by the JSON policy's field names."""

    platform: str
    values: Mapping[str, Any] = field(default_factory=dict)
    signed: bool = False


def parse_unverified(document: bytes, platform: str) -> Reference:
    """What a CoRIM says, signed or not, without judging its signature (for
    showing or converting it, never for appraising)."""
    return parse(document, platform, verify_signature=False)


def parse(
    document: bytes,
    platform: str,
    keys: Sequence[ec.EllipticCurvePublicKey] = (),
    *,
    verify_signature: bool = True,
) -> Reference:
    """The reference values for ``platform`` (``sev-snp`` or ``tdx``). A signed
    CoRIM must verify with one of ``keys``; PolicyError otherwise, naming why."""
    try:
        outer = cbor2.loads(document)
    except (cbor2.CBORDecodeError, ValueError, TypeError, EOFError) as exc:
        raise PolicyError(f"the CoRIM is not valid CBOR: {exc}") from None
    signed = isinstance(outer, cbor2.CBORTag) and outer.tag == TAG_SIGN1
    if signed:
        outer = _verified_payload(outer.value, keys, verify_signature)
    if not (isinstance(outer, cbor2.CBORTag) and outer.tag == TAG_UNSIGNED):
        raise PolicyError("not a CoRIM: expected tag 501 (or 18 around it)")
    corim = outer.value
    if not isinstance(corim, Mapping) or not isinstance(corim.get(1), list | tuple):
        raise PolicyError("the CoRIM has no tags (key 1)")
    values: dict[str, Any] = {}
    for tag in corim[1]:
        for environment, measurements in _reference_triples(tag):
            values.update(_values(platform, environment, measurements))
    if not values:
        raise PolicyError(f"the CoRIM holds no {platform} reference values")
    return Reference(platform=platform, values=values, signed=signed)


def _verified_payload(
    message: Any, keys: Sequence[ec.EllipticCurvePublicKey], verify_signature: bool
) -> Any:
    if not (isinstance(message, list | tuple) and len(message) == 4):
        raise PolicyError("the signed CoRIM is not a COSE_Sign1")
    protected, _unprotected, payload, signature = message
    if not verify_signature and isinstance(payload, bytes):
        return cbor2.loads(payload)
    if not keys:
        raise PolicyError("the CoRIM is signed and no CoRIM keys are configured to verify it")
    headers = cbor2.loads(protected) if protected else {}
    alg_id = headers.get(1) if isinstance(headers, Mapping) else None
    algorithm = COSE_ALGS.get(alg_id) if isinstance(alg_id, int) else None
    if algorithm is None or not isinstance(payload, bytes) or len(signature) % 2:
        raise PolicyError("the signed CoRIM's algorithm is not ES256, ES384 or ES512")
    to_be_signed = cbor2.dumps(["Signature1", protected, b"", payload])
    half = len(signature) // 2
    der = encode_dss_signature(
        int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
    )
    for key in keys:
        try:
            key.verify(der, to_be_signed, ec.ECDSA(algorithm()))
        except InvalidSignature:
            continue
        return cbor2.loads(payload)
    raise PolicyError("the CoRIM's signature does not verify with any configured CoRIM key")


def _reference_triples(tag: Any) -> list[tuple[Any, Any]]:
    comid = cbor2.loads(tag) if isinstance(tag, bytes) else tag
    if not (isinstance(comid, cbor2.CBORTag) and comid.tag == TAG_COMID):
        return []  # CoSWIDs and other tags hold no reference values
    triples = comid.value.get(4, {}) if isinstance(comid.value, Mapping) else {}
    return [(triple[0], triple[1]) for triple in triples.get(0, [])]


def _values(platform: str, environment: Any, measurements: Any) -> dict[str, Any]:
    names = SNP_NAMES if platform == "sev-snp" else TDX_NAMES
    values: dict[str, Any] = {}
    positional = 0
    for measurement in measurements or []:
        key, mval = measurement.get(0), measurement.get(1, {})
        if isinstance(key, str):
            name = names.get(key.lower())
            if name is None:
                raise PolicyError(f"the CoRIM measurement {key!r} is not a {platform} field")
        else:  # a UUID key: Cocos' corimgen, by position
            order = ("measurement",) if platform == "sev-snp" else TDX_POSITIONS
            if positional >= len(order):
                raise PolicyError(f"the CoRIM has more {platform} measurements than it can name")
            name = order[positional]
            positional += 1
        values[name] = _value(mval, name)
        svn = mval.get(1)
        if isinstance(svn, cbor2.CBORTag) and svn.tag in (552, 553):  # exact or minimum SVN
            svn = svn.value
        if platform == "sev-snp" and isinstance(svn, int) and svn > 0:
            values["minimum_guest_svn"] = svn
    product = _product(environment)
    if platform == "sev-snp" and product:
        values["product_line"] = product
    return values


def _value(mval: Mapping[Any, Any], name: str) -> Any:
    if mval.get(2):
        return bytes(mval[2][0][1])
    raw = mval.get(4)
    if isinstance(raw, cbor2.CBORTag) and raw.tag == TAG_RAW:
        raw = raw.value
    if isinstance(raw, bytes):
        integral = name in ("policy", "minimum_launch_tcb")
        return int.from_bytes(raw, "little") if integral else raw
    if isinstance(raw, int):
        return raw
    raise PolicyError(f"the CoRIM measurement {name} has no digest nor raw value")


def _product(environment: Any) -> str:
    if not isinstance(environment, Mapping):
        return ""
    instance = environment.get(1)
    if isinstance(instance, cbor2.CBORTag) and instance.tag == TAG_UUID:
        instance = uuid.UUID(bytes=bytes(instance.value))
    if isinstance(instance, uuid.UUID):  # cbor2 decodes tag 37 itself
        return PRODUCT_UUIDS.get(str(instance), "")
    model = (environment.get(0) or {}).get(2) if isinstance(environment.get(0), Mapping) else None
    return model if model in PRODUCTS else ""


def to_policy_json(reference: Reference) -> bytes:
    """The go-sev-guest ``check.Config`` or go-tdx-guest ``checkconfig.Config`` JSON."""
    values = reference.values

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    if reference.platform == "sev-snp":
        # Without the guest policy, allow what a policy of 0 would refuse but a
        # CoRIM did not say: SMT and a migration agent; never debugging.
        policy: dict[str, Any] = {"policy": WITHOUT_GUEST_POLICY}
        for name in ("measurement", "host_data"):
            if name in values:
                policy[name] = b64(values[name])
        for name in ("policy", "minimum_launch_tcb", "minimum_guest_svn"):
            if name in values:
                policy[name] = values[name]
        document: dict[str, Any] = {"policy": policy}
        if "product_line" in values:
            document["root_of_trust"] = {"product_line": values["product_line"]}
        return json.dumps(document, sort_keys=True).encode()
    body: dict[str, Any] = {
        name: b64(values[name])
        for name in ("mr_td", "mr_seam", "xfam", "td_attributes")
        if name in values
    }
    rtmrs = [values.get(f"rtmr{i}") for i in range(4)]
    if any(rtmrs):
        body["rtmrs"] = [b64(r) if r else "" for r in rtmrs]
    return json.dumps({"policy": {"td_quote_body_policy": body}}, sort_keys=True).encode()


SNP_EXPRESSIBLE = {"measurement", "host_data", "policy", "minimum_launch_tcb", "minimum_guest_svn"}
TDX_EXPRESSIBLE = {"mr_td", "mr_seam", "xfam", "td_attributes", "rtmrs"}


def from_policy_json(document: bytes, platform: str) -> bytes:
    """An unsigned CoRIM with the JSON policy's checks; PolicyError naming
    every field a CoRIM here cannot express (``cvm_id`` etc.)."""
    try:
        parsed = json.loads(document)
    except ValueError as exc:
        raise PolicyError(f"the policy is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise PolicyError("the policy is not a JSON object")
    policy = parsed.get("policy") or {}
    if platform == "sev-snp":
        fields, allowed = policy, SNP_EXPRESSIBLE
    else:
        fields, allowed = policy.get("td_quote_body_policy") or {}, TDX_EXPRESSIBLE
        extra = sorted(k for k in policy if k != "td_quote_body_policy" and policy[k])
        if extra:
            raise PolicyError(f"a CoRIM cannot express policy.{', policy.'.join(extra)}")
    unsupported = sorted(
        k for k, v in fields.items() if k not in allowed and v not in (None, "", 0, False, [], {})
    )
    root = parsed.get("root_of_trust") or {}
    unsupported += sorted(
        f"root_of_trust.{k}" for k, v in root.items() if k != "product_line" and v
    )
    unsupported += sorted(
        k for k, v in parsed.items() if k not in ("policy", "root_of_trust") and v
    )
    if unsupported:
        raise PolicyError(f"a CoRIM cannot express: {', '.join(unsupported)}")
    measurements = _measurements(platform, fields)
    snp = platform == "sev-snp"
    model = root.get("product_line") or ("SEV-SNP" if snp else "TDX")
    environment: dict[int, Any] = {0: {1: "AMD" if snp else "Intel", 2: model}}
    identity = str(uuid.uuid5(uuid.NAMESPACE_URL, json.dumps(parsed, sort_keys=True)))
    comid = {1: {0: identity}, 4: {0: [[environment, measurements]]}}
    tag = cbor2.dumps(cbor2.CBORTag(TAG_COMID, comid), canonical=True)
    return cbor2.dumps(cbor2.CBORTag(TAG_UNSIGNED, {0: identity, 1: [tag]}), canonical=True)


def _measurements(platform: str, fields: Mapping[str, Any]) -> list[dict[int, Any]]:
    def raw_bytes(value: Any, size: int = 48) -> bytes:
        """Base64, or hex of exactly the field's size (as the JSON policies take them)."""
        if isinstance(value, str) and len(value) == 2 * size:
            try:
                return bytes.fromhex(value)
            except ValueError:
                pass
        try:
            return base64.b64decode(value) if isinstance(value, str) else bytes(value)
        except ValueError:
            raise PolicyError(f"a policy value is neither base64 nor hex: {value!r}") from None

    out: list[dict[int, Any]] = []
    if platform == "sev-snp":
        if fields.get("measurement"):
            out.append(
                {0: "launch_measurement", 1: {2: [[SHA384_ALG, raw_bytes(fields["measurement"])]]}}
            )
        if fields.get("policy"):
            out.append(
                {
                    0: "guest_policy",
                    1: {4: cbor2.CBORTag(TAG_RAW, int(fields["policy"]).to_bytes(8, "little"))},
                }
            )
        if fields.get("host_data"):
            out.append(
                {0: "host_data", 1: {4: cbor2.CBORTag(TAG_RAW, raw_bytes(fields["host_data"], 32))}}
            )
        if fields.get("minimum_launch_tcb"):
            out.append({0: "launch_tcb", 1: {4: int(fields["minimum_launch_tcb"])}})
        if fields.get("minimum_guest_svn") and out:
            out[0][1][1] = int(fields["minimum_guest_svn"])
        return out
    for name in ("mr_td", "mr_seam", "xfam", "td_attributes"):
        if fields.get(name):
            value = raw_bytes(fields[name], 48 if name in ("mr_td", "mr_seam") else 8)
            entry = (
                {2: [[SHA384_ALG, value]]}
                if name in ("mr_td", "mr_seam")
                else {4: cbor2.CBORTag(TAG_RAW, value)}
            )
            out.append({0: name, 1: entry})
    for index, rtmr in enumerate(fields.get("rtmrs") or []):
        if rtmr:
            out.append({0: f"rtmr{index}", 1: {2: [[SHA384_ALG, raw_bytes(rtmr)]]}})
    return out
