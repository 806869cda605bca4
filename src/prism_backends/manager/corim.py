"""A CoRIM (draft-ietf-rats-corim) carrying one SEV-SNP launch's reference
values, in CBOR: what Cocos' manager serves as its attestation policy.

The shape: ``#6.501`` unsigned CoRIM map {0: id, 1: [CoMID as bstr]}, the CoMID
``#6.506`` {1: tag identity, 4: triples {0: reference triples}} with one
environment (AMD, SEV-SNP) and measurements keyed by name: the launch
measurement as a SHA-384 digest, the guest policy and host data as raw values.
Unsigned: the policy travels over the manager's mutual-TLS channel.
"""

from __future__ import annotations

import uuid

import cbor2

TAG_UNSIGNED_CORIM = 501
TAG_COMID = 506
TAG_RAW_VALUE = 560
SHA384 = 7  # named-information hash algorithm registry
PROFILE = "tag:ultraviolet.rs,2026:cocos-snp"


def snp_reference_corim(*, measurement: bytes, guest_policy: int, host_data: bytes) -> bytes:
    """Encode the reference values; the same inputs give the same bytes."""
    identity = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{PROFILE}:{measurement.hex()}"))
    measurements = [
        {0: "launch_measurement", 1: {2: [[SHA384, measurement]]}},
        {
            0: "guest_policy",
            1: {4: cbor2.CBORTag(TAG_RAW_VALUE, guest_policy.to_bytes(8, "little"))},
        },
    ]
    if host_data:
        measurements.append({0: "host_data", 1: {4: cbor2.CBORTag(TAG_RAW_VALUE, host_data)}})
    comid = {
        1: {0: identity},
        4: {0: [[{0: {1: "AMD", 2: "SEV-SNP"}}, measurements]]},
    }
    tagged_comid = cbor2.dumps(cbor2.CBORTag(TAG_COMID, comid), canonical=True)
    document = {0: identity, 1: [tagged_comid], 3: PROFILE}
    return cbor2.dumps(cbor2.CBORTag(TAG_UNSIGNED_CORIM, document), canonical=True)


def snp_reference_values(encoded: bytes) -> dict[str, bytes | int]:
    """Read back what :func:`snp_reference_corim` wrote (for tests and tools)."""
    outer = cbor2.loads(encoded)
    if not isinstance(outer, cbor2.CBORTag) or outer.tag != TAG_UNSIGNED_CORIM:
        raise ValueError("not an unsigned CoRIM (tag 501)")
    comid = cbor2.loads(outer.value[1][0])
    if not isinstance(comid, cbor2.CBORTag) or comid.tag != TAG_COMID:
        raise ValueError("the CoRIM holds no CoMID (tag 506)")
    values: dict[str, bytes | int] = {}
    for _environment, measurements in comid.value[4][0]:
        for entry in measurements:
            value = entry[1]
            if 2 in value:
                values[entry[0]] = value[2][0][1]
            elif entry[0] == "guest_policy":
                values[entry[0]] = int.from_bytes(value[4].value, "little")
            else:
                values[entry[0]] = value[4].value
    return values
