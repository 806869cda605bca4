"""Validating quotes against a policy: every check passes and fails, naming the
field, what the policy wants and what the quote has."""

from __future__ import annotations

from typing import Any

import pytest

from prism_backends.attestation.common import CheckFailure
from prism_backends.attestation.tdx.abi import Quote, parse_quote
from prism_backends.attestation.tdx.policy import (
    HeaderPolicy,
    Policy,
    TdQuoteBodyPolicy,
    parse_config,
)
from prism_backends.attestation.tdx.validate import validate
from prism_backends.attestation.tdx.verify import verify
from tests.attestation.tdx import vectors
from tests.attestation.tdx.signer import NOW, QuoteFields, make_pki, sign_quote

PKI = make_pki()
FIELDS = QuoteFields(
    version=5,
    body_type=3,
    qe_svn=5,
    pce_svn=13,
    tee_tcb_svn=bytes([3, 1, 5]) + bytes(13),
    tee_tcb_svn2=bytes([3, 1, 4]) + bytes(13),
)


def signed(fields: QuoteFields = FIELDS) -> Quote:
    """A quote from the signer that also verifies (validation follows verification)."""
    raw = sign_quote(PKI, fields)
    return verify(raw, trusted_roots=[PKI.root.cert], now=NOW).quote


QUOTE = signed()
OTHER48 = bytes([0xEE]) * 48


def header(**kwargs: Any) -> Policy:
    return Policy(header_policy=HeaderPolicy(**kwargs))


def body(**kwargs: Any) -> Policy:
    return Policy(td_quote_body_policy=TdQuoteBodyPolicy(**kwargs))


def test_an_empty_policy_passes() -> None:
    assert validate(QUOTE, Policy()) == []


# (policy that passes, policy that fails, the failure it reports)
CASES: list[tuple[str, Policy, Policy, CheckFailure]] = [
    (
        "minimum_qe_svn",
        header(minimum_qe_svn=5),
        header(minimum_qe_svn=6),
        CheckFailure("qe_svn", ">= 6", "5"),
    ),
    (
        "minimum_pce_svn",
        header(minimum_pce_svn=13),
        header(minimum_pce_svn=14),
        CheckFailure("pce_svn", ">= 14", "13"),
    ),
    (
        "qe_vendor_id",
        header(qe_vendor_id=FIELDS.qe_vendor_id),
        header(qe_vendor_id=bytes(16)),
        CheckFailure("qe_vendor_id", "00" * 16, FIELDS.qe_vendor_id.hex()),
    ),
    (
        "minimum_tee_tcb_svn",
        body(minimum_tee_tcb_svn=bytes([3, 1, 5]) + bytes(13)),
        body(minimum_tee_tcb_svn=bytes([2, 1, 6]) + bytes(13)),
        CheckFailure(
            "tee_tcb_svn",
            ">= 020106" + "00" * 13 + " (each byte)",
            "030105" + "00" * 13,
        ),
    ),
    (
        "mr_seam",
        body(mr_seam=FIELDS.mr_seam),
        body(mr_seam=OTHER48),
        CheckFailure("mr_seam", OTHER48.hex(), FIELDS.mr_seam.hex()),
    ),
    (
        "td_attributes",
        body(td_attributes=FIELDS.td_attributes),
        body(td_attributes=bytes(8)),
        CheckFailure("td_attributes", "00" * 8, "0000001000000000"),
    ),
    (
        "xfam",
        body(xfam=FIELDS.xfam),
        body(xfam=bytes.fromhex("e700000000000000")),
        CheckFailure("xfam", "e700000000000000", "e702060000000000"),
    ),
    (
        "mr_td",
        body(mr_td=FIELDS.mr_td),
        body(mr_td=OTHER48),
        CheckFailure("mr_td", OTHER48.hex(), FIELDS.mr_td.hex()),
    ),
    (
        "mr_config_id",
        body(mr_config_id=FIELDS.mr_config_id),
        body(mr_config_id=OTHER48),
        CheckFailure("mr_config_id", OTHER48.hex(), FIELDS.mr_config_id.hex()),
    ),
    (
        "mr_owner",
        body(mr_owner=FIELDS.mr_owner),
        body(mr_owner=OTHER48),
        CheckFailure("mr_owner", OTHER48.hex(), FIELDS.mr_owner.hex()),
    ),
    (
        "mr_owner_config",
        body(mr_owner_config=FIELDS.mr_owner_config),
        body(mr_owner_config=OTHER48),
        CheckFailure("mr_owner_config", OTHER48.hex(), FIELDS.mr_owner_config.hex()),
    ),
    (
        "rtmrs",
        body(rtmrs=FIELDS.rtmrs),
        body(rtmrs=(None, None, OTHER48, None)),
        CheckFailure("rtmr2", OTHER48.hex(), FIELDS.rtmrs[2].hex()),
    ),
    (
        "report_data",
        body(report_data=FIELDS.report_data),
        body(report_data=bytes(64)),
        CheckFailure("report_data", "00" * 64, FIELDS.report_data.hex()),
    ),
    (
        "any_mr_td",
        body(any_mr_td=(OTHER48, FIELDS.mr_td)),
        body(any_mr_td=(OTHER48, bytes(48))),
        CheckFailure("mr_td", f"one of {OTHER48.hex()}, {bytes(48).hex()}", FIELDS.mr_td.hex()),
    ),
    (
        "tdattributes_debug",
        body(tdattributes_debug=False),
        body(tdattributes_debug=True),
        CheckFailure("td_attributes.debug", "true", "false"),
    ),
    (
        "minimum_tee_tcb_svn2",
        body(minimum_tee_tcb_svn2=bytes([3, 1, 4]) + bytes(13)),
        body(minimum_tee_tcb_svn2=bytes([3, 1, 5]) + bytes(13)),
        CheckFailure(
            "tee_tcb_svn2",
            ">= 030105" + "00" * 13 + " (each byte)",
            "030104" + "00" * 13,
        ),
    ),
    (
        "mr_service_td",
        body(mr_service_td=FIELDS.mr_service_td),
        body(mr_service_td=OTHER48),
        CheckFailure("mr_service_td", OTHER48.hex(), FIELDS.mr_service_td.hex()),
    ),
]


@pytest.mark.parametrize(
    ("passing", "failing", "failure"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_each_check_passes_and_fails(
    passing: Policy, failing: Policy, failure: CheckFailure
) -> None:
    assert validate(QUOTE, passing) == []
    assert validate(QUOTE, failing) == [failure]


def test_every_failure_is_reported_at_once() -> None:
    policy = Policy(
        header_policy=HeaderPolicy(minimum_qe_svn=9),
        td_quote_body_policy=TdQuoteBodyPolicy(mr_td=OTHER48, report_data=bytes(64)),
    )

    assert [failure.field for failure in validate(QUOTE, policy)] == [
        "qe_svn",
        "mr_td",
        "report_data",
    ]


def test_tdx_1_5_fields_are_absent_from_a_tdx_1_0_body() -> None:
    quote = signed(FIELDS.but(body_type=2))
    policy = body(minimum_tee_tcb_svn2=bytes(16), mr_service_td=OTHER48)

    assert validate(quote, policy) == [
        CheckFailure("tee_tcb_svn2", ">= " + "00" * 16, "absent (not a TDX 1.5 quote body)"),
        CheckFailure("mr_service_td", OTHER48.hex(), "absent (not a TDX 1.5 quote body)"),
    ]


def test_debug_td_is_reported() -> None:
    quote = signed(FIELDS.but(td_attributes=bytes.fromhex("0100001000000000")))

    assert validate(quote, body(tdattributes_debug=False)) == [
        CheckFailure("td_attributes.debug", "false", "true")
    ]


def test_xfam_and_td_attributes_must_respect_tdx_fixed_bits() -> None:
    xfam_without_x87 = signed(FIELDS.but(xfam=bytes.fromhex("e602060000000000")))
    unknown_attribute = signed(FIELDS.but(td_attributes=bytes.fromhex("0000001000000100")))

    assert validate(xfam_without_x87, Policy()) == [
        CheckFailure(
            "xfam",
            "bits 0x3 set and none outside 0x6dbe7 (little-endian u64)",
            "e602060000000000",
        )
    ]
    assert validate(unknown_attribute, Policy()) == [
        CheckFailure(
            "td_attributes",
            "bits 0x0 set and none outside 0x8000000050000001 (little-endian u64)",
            "0000001000000100",
        )
    ]


def test_the_real_v4_quote_meets_a_policy_of_its_own_values() -> None:
    quote = parse_quote(vectors.quote_v4())
    b = quote.body
    config = parse_config(
        {
            "policy": {
                "headerPolicy": {"qeVendorId": quote.header.qe_vendor_id.hex()},
                "tdQuoteBodyPolicy": {
                    "minimumTeeTcbSvn": b.tee_tcb_svn.hex(),
                    "mrSeam": b.mr_seam.hex(),
                    "tdAttributes": b.td_attributes.hex(),
                    "xfam": b.xfam.hex(),
                    "mrTd": b.mr_td.hex(),
                    "rtmrs": [rtmr.hex() for rtmr in b.rtmrs],
                    "reportData": b.report_data.hex(),
                    "tdattributesDebug": False,
                },
            }
        }
    )

    assert validate(quote, config.policy) == []
