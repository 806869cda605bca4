"""Parsing go-tdx-guest checkconfig.Config JSON."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from prism_backends.attestation.common import PolicyError
from prism_backends.attestation.tdx.policy import (
    Config,
    HeaderPolicy,
    Policy,
    RootOfTrust,
    TdQuoteBodyPolicy,
    decode_bytes,
    parse_config,
    parse_policy,
)

MR_TD = bytes(range(48))
RTMR = bytes([0xA1]) * 48
VENDOR = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


SNAKE: dict[str, Any] = {
    "root_of_trust": {
        "cabundle_paths": ["/etc/intel/root.pem"],
        "cabundles": ["-----BEGIN CERTIFICATE-----..."],
        "check_crl": True,
        "get_collateral": True,
    },
    "policy": {
        "header_policy": {
            "minimum_qe_svn": 4,
            "minimum_pce_svn": 11,
            "qe_vendor_id": b64(VENDOR),
        },
        "td_quote_body_policy": {
            "minimum_tee_tcb_svn": b64(bytes([3, 0, 4]) + bytes(13)),
            "mr_seam": b64(bytes([1]) * 48),
            "td_attributes": b64(bytes.fromhex("0000001000000000")),
            "xfam": b64(bytes.fromhex("e702060000000000")),
            "mr_td": b64(MR_TD),
            "mr_config_id": b64(bytes(48)),
            "mr_owner": b64(bytes([2]) * 48),
            "mr_owner_config": b64(bytes([3]) * 48),
            "rtmrs": [b64(RTMR), "", b64(RTMR), ""],
            "report_data": b64(bytes(64)),
            "any_mr_td": [b64(MR_TD), b64(bytes(48))],
            "tdattributes_debug": False,
            "minimum_tee_tcb_svn2": b64(bytes(16)),
            "mr_service_td": b64(bytes([5]) * 48),
        },
    },
}

CAMEL: dict[str, Any] = {
    "rootOfTrust": {
        "cabundlePaths": ["/etc/intel/root.pem"],
        "cabundles": ["-----BEGIN CERTIFICATE-----..."],
        "checkCrl": True,
        "getCollateral": True,
    },
    "policy": {
        "headerPolicy": {"minimumQeSvn": "4", "minimumPceSvn": 11, "qeVendorId": VENDOR.hex()},
        "tdQuoteBodyPolicy": {
            "minimumTeeTcbSvn": (bytes([3, 0, 4]) + bytes(13)).hex(),
            "mrSeam": (bytes([1]) * 48).hex(),
            "tdAttributes": "0000001000000000",
            "xfam": "e702060000000000",
            "mrTd": MR_TD.hex(),
            "mrConfigId": base64.urlsafe_b64encode(bytes(48)).decode().rstrip("="),
            "mrOwner": (bytes([2]) * 48).hex(),
            "mrOwnerConfig": (bytes([3]) * 48).hex(),
            "rtmrs": [RTMR.hex(), "", RTMR.hex(), ""],
            "reportData": bytes(64).hex(),
            "anyMrTd": [MR_TD.hex(), bytes(48).hex()],
            "tdattributesDebug": False,
            "minimumTeeTcbSvn2": bytes(16).hex(),
            "mrServiceTd": (bytes([5]) * 48).hex(),
        },
    },
}

EXPECTED = Config(
    policy=Policy(
        header_policy=HeaderPolicy(minimum_qe_svn=4, minimum_pce_svn=11, qe_vendor_id=VENDOR),
        td_quote_body_policy=TdQuoteBodyPolicy(
            minimum_tee_tcb_svn=bytes([3, 0, 4]) + bytes(13),
            mr_seam=bytes([1]) * 48,
            td_attributes=bytes.fromhex("0000001000000000"),
            xfam=bytes.fromhex("e702060000000000"),
            mr_td=MR_TD,
            mr_config_id=bytes(48),
            mr_owner=bytes([2]) * 48,
            mr_owner_config=bytes([3]) * 48,
            rtmrs=(RTMR, None, RTMR, None),
            report_data=bytes(64),
            any_mr_td=(MR_TD, bytes(48)),
            tdattributes_debug=False,
            minimum_tee_tcb_svn2=bytes(16),
            mr_service_td=bytes([5]) * 48,
        ),
    ),
    root_of_trust=RootOfTrust(
        cabundle_paths=("/etc/intel/root.pem",),
        cabundles=("-----BEGIN CERTIFICATE-----...",),
        check_crl=True,
        get_collateral=True,
    ),
)


def test_snake_case_config_parses() -> None:
    assert parse_config(json.dumps(SNAKE)) == EXPECTED


def test_camel_case_config_with_hex_parses_the_same() -> None:
    assert parse_config(json.dumps(CAMEL).encode()) == EXPECTED


def test_an_already_decoded_config_parses() -> None:
    assert parse_config(SNAKE) == EXPECTED


def test_the_policy_alone_parses() -> None:
    assert parse_policy(json.dumps(CAMEL["policy"])) == EXPECTED.policy


def test_empty_and_null_mean_unset() -> None:
    config = parse_config(
        {
            "policy": {
                "header_policy": None,
                "td_quote_body_policy": {"mr_td": "", "rtmrs": [], "any_mr_td": None},
            }
        }
    )

    assert config == Config()
    assert parse_config("{}") == Config()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"policy": {"mr_td": "x"}}, r"policy: unknown key\(s\) 'mr_td'"),
        (
            {"policy": {"td_quote_body_policy": {"mrTdd": "", "mr_tdx": ""}}},
            r"td_quote_body_policy: unknown key\(s\) 'mrTdd', 'mr_tdx'",
        ),
        ({"rootOfTrust": {"product": "x"}}, r"root_of_trust: unknown key\(s\) 'product'"),
        ({"extra": 1}, r"config: unknown key\(s\) 'extra'"),
        (
            {"policy": {"header_policy": {"minimum_qe_svn": 1, "minimumQeSvn": 2}}},
            "'minimum_qe_svn' is given twice",
        ),
        ({"policy": {"header_policy": {"minimum_qe_svn": 65536}}}, "expect 0-65535"),
        ({"policy": {"header_policy": {"minimum_pce_svn": -1}}}, "is not a uint32"),
        ({"policy": {"header_policy": {"minimum_pce_svn": "1x"}}}, "not an unsigned integer"),
        ({"policy": {"header_policy": {"minimum_pce_svn": True}}}, "unsigned integer"),
        ({"policy": {"header_policy": {"qe_vendor_id": b64(bytes(15))}}}, "must be 16 bytes"),
        ({"policy": {"header_policy": {"qe_vendor_id": "!!" * 16}}}, "not base64 or hex"),
        ({"policy": {"header_policy": {"qe_vendor_id": 5}}}, "string of base64 or hex"),
        ({"policy": {"td_quote_body_policy": {"rtmrs": [""] * 3}}}, "has 3 entries; want 4"),
        ({"policy": {"td_quote_body_policy": {"rtmrs": "x"}}}, "must be a JSON list"),
        ({"policy": {"td_quote_body_policy": {"any_mr_td": [""]}}}, "would match nothing"),
        ({"policy": {"td_quote_body_policy": {"tdattributes_debug": 1}}}, "true or false"),
        ({"policy": []}, "policy: must be a JSON object"),
        ({"root_of_trust": {"cabundles": [1]}}, "list of strings"),
    ],
)
def test_bad_configs_are_refused_naming_the_field(document: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_config(document)


def test_duplicate_json_keys_are_refused() -> None:
    with pytest.raises(PolicyError, match="'policy' appears twice"):
        parse_config('{"policy": {}, "policy": {}}')


def test_invalid_json_is_refused() -> None:
    with pytest.raises(PolicyError, match="not valid JSON"):
        parse_config("{")


def test_bytes_are_hex_only_at_twice_their_size() -> None:
    # 16 hex digits for 8 bytes is hex; the same digits as base64 would be 12 bytes.
    assert decode_bytes("0000001000000000", 8, "f") == bytes.fromhex("0000001000000000")
    assert decode_bytes(b64(bytes([0xFB]) * 8), 8, "f") == bytes([0xFB]) * 8
    assert decode_bytes(base64.urlsafe_b64encode(bytes([0xFB]) * 8).decode(), 8, "f") == (
        bytes([0xFB]) * 8
    )
    with pytest.raises(PolicyError, match="f: must be 8 bytes"):
        decode_bytes("00000010000000", 8, "f")
