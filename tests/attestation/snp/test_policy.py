"""Parsing go-sev-guest check.Config policy documents (snake_case and camelCase)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from prism_backends.attestation.common import PolicyError
from prism_backends.attestation.snp.policy import (
    ProductSpec,
    RootOfTrust,
    SnpConfig,
    SnpPolicy,
    parse_config,
    parse_policy,
    sev_key_digest,
)

from .signer import NOT_AFTER, NOT_BEFORE, amd_name

MEASUREMENT = bytes(range(48))
HOST_DATA = bytes(range(100, 132))
CHIP_ID = bytes(range(64))
KEY_HASH = bytes([7]) * 48


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# What `protojson.Marshal` writes for a check.Config (newer Cocos): camelCase keys,
# 64-bit integers as strings, wrappers as bare values, bytes in base64.
CAMEL = {
    "policy": {
        "minimumGuestSvn": 1,
        "policy": "196608",
        "familyId": b64(bytes(16)),
        "imageId": b64(bytes([1]) * 16),
        "vmpl": 0,
        "minimumTcb": "15060210866436849667",
        "minimumLaunchTcb": "15060210866436849667",
        "platformInfo": "1",
        "requireAuthorKey": False,
        "reportData": b64(bytes(64)),
        "measurement": b64(MEASUREMENT),
        "hostData": b64(HOST_DATA),
        "reportId": b64(bytes(32)),
        "reportIdMa": b64(b"\xff" * 32),
        "chipId": b64(CHIP_ID),
        "minimumBuild": 21,
        "minimumVersion": "1.55",
        "permitProvisionalFirmware": True,
        "requireIdBlock": False,
        "trustedIdKeyHashes": [b64(KEY_HASH)],
        "product": {"name": "SEV_PRODUCT_MILAN", "machineStepping": 1},
    },
    "rootOfTrust": {
        "product": "Milan",
        "cabundlePaths": ["/etc/amd/ask_ark.pem"],
        "checkCrl": True,
        "disallowNetwork": False,
        "productLine": "Milan",
    },
}

# What older Cocos writes (protojson with UseProtoNames): snake_case, numbers for ints.
SNAKE = {
    "policy": {
        "minimum_guest_svn": 1,
        "policy": 196608,
        "family_id": b64(bytes(16)),
        "image_id": b64(bytes([1]) * 16),
        "vmpl": 0,
        "minimum_tcb": 15060210866436849667,
        "minimum_launch_tcb": 15060210866436849667,
        "platform_info": 1,
        "require_author_key": False,
        "report_data": b64(bytes(64)),
        "measurement": b64(MEASUREMENT),
        "host_data": b64(HOST_DATA),
        "report_id": b64(bytes(32)),
        "report_id_ma": b64(b"\xff" * 32),
        "chip_id": b64(CHIP_ID),
        "minimum_build": 21,
        "minimum_version": "1.55",
        "permit_provisional_firmware": True,
        "require_id_block": False,
        "trusted_id_key_hashes": [b64(KEY_HASH)],
        "product": {"name": "SEV_PRODUCT_MILAN", "machine_stepping": 1},
    },
    "root_of_trust": {
        "product": "Milan",
        "cabundle_paths": ["/etc/amd/ask_ark.pem"],
        "check_crl": True,
        "disallow_network": False,
        "product_line": "Milan",
    },
}

EXPECTED = SnpConfig(
    policy=SnpPolicy(
        minimum_guest_svn=1,
        policy=0x30000,
        family_id=bytes(16),
        image_id=bytes([1]) * 16,
        vmpl=0,
        minimum_tcb=15060210866436849667,
        minimum_launch_tcb=15060210866436849667,
        platform_info=1,
        report_data=bytes(64),
        measurement=MEASUREMENT,
        host_data=HOST_DATA,
        report_id=bytes(32),
        report_id_ma=b"\xff" * 32,
        chip_id=CHIP_ID,
        minimum_build=21,
        minimum_version=(1, 55),
        permit_provisional_firmware=True,
        trusted_id_key_hashes=(KEY_HASH,),
        product=ProductSpec(name="Milan", machine_stepping=1),
    ),
    root_of_trust=RootOfTrust(
        product="Milan",
        cabundle_paths=("/etc/amd/ask_ark.pem",),
        check_crl=True,
        product_line="Milan",
    ),
)


def test_camel_case_document() -> None:
    assert parse_config(json.dumps(CAMEL)) == EXPECTED


def test_snake_case_document() -> None:
    assert parse_config(json.dumps(SNAKE).encode()) == EXPECTED


def test_decoded_mapping_and_defaults() -> None:
    assert parse_config({}) == SnpConfig()
    assert parse_config({"policy": None, "root_of_trust": None}) == SnpConfig()
    config = parse_config({"policy": {"measurement": b64(MEASUREMENT)}})
    assert config.policy == SnpPolicy(measurement=MEASUREMENT)
    assert config.policy.guest_policy.smt is False


def test_hex_bytes_where_go_sev_guest_takes_hex() -> None:
    policy = parse_policy(
        {
            "measurement": MEASUREMENT.hex(),
            "hostData": HOST_DATA.hex().upper(),
            "chip_id": CHIP_ID.hex(),
            "trusted_author_key_hashes": [KEY_HASH.hex()],
        }
    )
    assert policy.measurement == MEASUREMENT
    assert policy.host_data == HOST_DATA
    assert policy.chip_id == CHIP_ID
    assert policy.trusted_author_key_hashes == (KEY_HASH,)


def test_url_safe_unpadded_base64() -> None:
    data = b"\xfb\xff" * 8
    text = base64.urlsafe_b64encode(data).decode().rstrip("=")
    assert "-" in text or "_" in text
    assert parse_policy({"family_id": text}).family_id == data


def test_trusted_key_certificates() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(amd_name("ID key"))
        .issuer_name(amd_name("ID key"))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .sign(key, hashes.SHA384())
    )
    der = cert.public_bytes(Encoding.DER)
    policy = parse_policy({"trustedIdKeys": [b64(der)]})
    assert policy.trusted_id_keys == (der,)
    digest = sev_key_digest(der)
    assert digest is not None and len(digest) == 48


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"policy": {}, "pcr_valuez": {}}, r"unknown key\(s\) in config: pcr_valuez"),
        ({"policy": {"measurment": "", "foo": 1}}, r"unknown key\(s\) in policy: foo, measurment"),
        (
            {"root_of_trust": {"productName": "Milan"}},
            r"unknown key\(s\) in root_of_trust: productName",
        ),
        (
            {"policy": {"product": {"name": "SEV_PRODUCT_MILAN", "model": 1}}},
            "policy.product: model",
        ),
        ({"policy": {"host_data": "", "hostData": ""}}, "policy.host_data is given twice"),
        ({"policy": {"measurement": b64(bytes(47))}}, "policy.measurement must be 48 bytes"),
        ({"policy": {"measurement": "zz"}}, "policy.measurement must be 48 bytes"),
        ({"policy": {"chip_id": CHIP_ID[:8].hex()}}, "policy.chip_id must be 64 bytes"),
        ({"policy": {"vmpl": 4}}, "policy.vmpl is 4, expected 0-3"),
        ({"policy": {"vmpl": True}}, "policy.vmpl must be an integer"),
        ({"policy": {"minimum_guest_svn": -1}}, "not a 32-bit"),
        ({"policy": {"minimum_guest_svn": 2**32}}, "not a 32-bit"),
        ({"policy": {"minimum_tcb": "0x10"}}, "policy.minimum_tcb must be an unsigned integer"),
        ({"policy": {"minimum_build": 256}}, "policy.minimum_build is 256"),
        ({"policy": {"minimum_version": "1"}}, "policy.minimum_version must be 'major.minor'"),
        ({"policy": {"minimum_version": "1.256"}}, "0-255"),
        ({"policy": {"policy": 0x10000}}, "policy.policy: .*bit 17 must be 1"),
        ({"policy": {"policy": 0x30000 | 1 << 40}}, "policy.policy: .*bits 26-63"),
        ({"policy": {"platform_info": 0x40}}, "policy.platform_info 0x40 sets unknown bits"),
        ({"policy": {"require_id_block": "yes"}}, "policy.require_id_block must be true or false"),
        ({"policy": {"trusted_id_keys": [b64(b"nope")]}}, r"policy.trusted_id_keys\[0\]"),
        ({"policy": {"trusted_id_key_hashes": b64(KEY_HASH)}}, "must be a list"),
        ({"policy": {"trusted_id_key_hashes": [""]}}, r"trusted_id_key_hashes\[0\] is empty"),
        ({"policy": {"product": {"name": "MILAN"}}}, "policy.product.name must be one of"),
        ({"policy": {"product": {"name": 9}}}, "not a SevProductName"),
        ({"policy": {"product": {"machine_stepping": 16}}}, "not a 4-bit"),
        ({"policy": []}, "policy must be a JSON object"),
        ({"root_of_trust": {"product_line": "Naples"}}, "root_of_trust.product_line 'Naples'"),
        ({"root_of_trust": {"cabundles": "pem"}}, "root_of_trust.cabundles must be a list"),
    ],
)
def test_bad_documents_name_the_field(document: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_config(document)


def test_bad_json() -> None:
    with pytest.raises(PolicyError, match="not JSON"):
        parse_config("{")
    with pytest.raises(PolicyError, match="config must be a JSON object"):
        parse_config("[]")


def test_product_enum_by_number_and_unknown() -> None:
    assert parse_policy({"product": {"name": 3}}).product == ProductSpec("Turin")
    assert parse_policy({"product": {"name": "SEV_PRODUCT_UNKNOWN"}}).product is None
    assert parse_policy({"product": {"stepping": 2}}).product == ProductSpec(None, 2)
