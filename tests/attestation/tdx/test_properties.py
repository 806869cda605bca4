"""Properties: a changed byte in what the quote signs is always refused, and no
input, however mangled, raises anything but an AttestationError."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prism_backends.attestation.common import (
    AttestationError,
    CollateralUnavailable,
    MalformedEvidence,
    PolicyError,
    SignatureInvalid,
)
from prism_backends.attestation.tdx.abi import parse_quote
from prism_backends.attestation.tdx.pcs import parse_qe_identity, parse_tcb_info
from prism_backends.attestation.tdx.policy import parse_config
from prism_backends.attestation.tdx.verify import verify
from tests.attestation.tdx import vectors
from tests.attestation.tdx.signer import NOW, QuoteFields, make_pki, sign_quote

_PKI = make_pki()
# (raw quote, trusted root, now) for the two real quotes and a signer's TDX 1.5 quote
CASES: list[tuple[bytes, x509.Certificate, datetime]] = [
    (vectors.quote_v4(), vectors.intel_root(), vectors.V4_NOW),
    (vectors.quote_v5(), vectors.intel_root(), vectors.V5_NOW),
    (sign_quote(_PKI, QuoteFields(version=5, body_type=3)), _PKI.root.cert, NOW),
]
PROPERTY = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
FUZZ = settings(PROPERTY, max_examples=150)


def _signed_offsets(raw: bytes) -> list[int]:
    """Offsets of the signed bytes (header + body) and of the quote signature."""
    signed = len(parse_quote(raw).signed_bytes())
    signature = signed + 4  # after the signed data size
    return [*range(signed), *range(signature, signature + 64)]


_OFFSETS = [_signed_offsets(raw) for raw, _, _ in CASES]


def test_every_case_verifies_untouched() -> None:
    for raw, root, now in CASES:
        assert verify(raw, trusted_roots=[root], now=now).quote.signed_bytes()


@PROPERTY
@given(
    case=st.integers(0, len(CASES) - 1),
    position=st.integers(0, 10**6),
    delta=st.integers(1, 255),
)
def test_a_changed_signed_byte_or_signature_byte_is_refused(
    case: int, position: int, delta: int
) -> None:
    raw, root, now = CASES[case]
    offsets = _OFFSETS[case]
    offset = offsets[position % len(offsets)]
    mutated = bytearray(raw)
    mutated[offset] ^= delta

    try:
        verify(bytes(mutated), trusted_roots=[root], now=now)
    except (MalformedEvidence, SignatureInvalid):
        return
    raise AssertionError(f"byte {offset:#x} changed by {delta:#x} still verifies")


@pytest.mark.parametrize("case", range(len(CASES)))
def test_every_signed_byte_and_signature_byte_is_covered(case: int) -> None:
    """Exhaustively: flipping the low bit of any signed or signature byte is refused."""
    raw, root, now = CASES[case]
    for offset in _OFFSETS[case]:
        mutated = bytearray(raw)
        mutated[offset] ^= 0x01
        with pytest.raises((MalformedEvidence, SignatureInvalid)):
            verify(bytes(mutated), trusted_roots=[root], now=now)


# A mangled certificate name (say a country code 17 bytes long) makes
# cryptography warn as it reads the name; verify() still refuses the chain.
@pytest.mark.filterwarnings("ignore:Attribute's length must be:UserWarning")
@PROPERTY
@given(
    case=st.integers(0, len(CASES) - 1),
    position=st.integers(0, 10**6),
    delta=st.integers(1, 255),
)
def test_a_changed_byte_anywhere_is_refused_or_changes_nothing(
    case: int, position: int, delta: int
) -> None:
    raw, root, now = CASES[case]
    offset = position % len(raw)
    mutated = bytearray(raw)
    mutated[offset] ^= delta

    try:
        result = verify(bytes(mutated), trusted_roots=[root], now=now)
    except AttestationError:
        return
    # Only bytes nothing covers may change without effect: the padding after
    # the signed data, or a PEM character whose decoded bytes stay the same.
    original = verify(raw, trusted_roots=[root], now=now)
    assert result.verified == original.verified
    assert result.pck_chain == original.pck_chain


@PROPERTY
@given(case=st.integers(0, len(CASES) - 1), length=st.integers(0, 10**6))
def test_a_truncated_quote_is_malformed(case: int, length: int) -> None:
    raw, root, now = CASES[case]
    signed_data_end = len(raw) - len(parse_quote(raw).extra_bytes)
    cut = raw[: length % signed_data_end]

    try:
        verify(cut, trusted_roots=[root], now=now)
    except MalformedEvidence:
        return
    raise AssertionError(f"a quote cut to {len(cut)} bytes still verifies")


@PROPERTY
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_are_malformed_evidence(data: bytes) -> None:
    try:
        parse_quote(data)
    except MalformedEvidence:
        return


HEADER_STARTS = [b"\x04\x00\x02\x00\x81\x00\x00\x00", b"\x05\x00\x02\x00\x81\x00\x00\x00"]


@PROPERTY
@given(prefix=st.sampled_from(HEADER_STARTS), rest=st.binary(max_size=4096))
def test_arbitrary_bytes_after_a_valid_header_start_are_malformed(
    prefix: bytes, rest: bytes
) -> None:
    try:
        verify(prefix + rest, trusted_roots=[vectors.intel_root()], now=vectors.V4_NOW)
    except AttestationError:
        return
    raise AssertionError("random bytes verified")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "policy",
                    "root_of_trust",
                    "header_policy",
                    "tdQuoteBodyPolicy",
                    "mr_td",
                    "rtmrs",
                    "tcbLevels",
                    "tcb",
                    "id",
                    "version",
                    "x",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@FUZZ
@given(JSON)
def test_arbitrary_json_policies_are_policy_errors(document: object) -> None:
    try:
        parse_config(json.dumps(document))
    except PolicyError:
        return


@FUZZ
@given(JSON)
def test_arbitrary_json_collateral_is_collateral_unavailable(value: object) -> None:
    for parse in (parse_tcb_info, parse_qe_identity):
        try:
            parse(value)
        except CollateralUnavailable:
            continue
        raise AssertionError(f"{parse.__name__} accepted {value!r}")
