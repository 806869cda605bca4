"""Parsing TDX quotes: the real samples, the signer's quotes, malformed bytes."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from prism_backends.attestation.common import MalformedEvidence
from prism_backends.attestation.tdx.abi import parse_quote, pem_certificates
from tests.attestation.tdx import vectors
from tests.attestation.tdx.signer import QuoteFields, make_pki, sign_quote


def test_real_v4_quote_parses_field_by_field() -> None:
    quote = parse_quote(vectors.quote_v4())

    assert quote.version == 4
    assert quote.body_type == 2
    assert quote.header.attestation_key_type == 2
    assert quote.header.tee_type == 0x81
    assert quote.header.qe_vendor_id.hex() == "939a7233f79c4ca9940a0db3957f0607"
    assert quote.body.tee_tcb_svn.hex() == "03000400000000000000000000000000"
    assert quote.body.td_attributes.hex() == "0000004000000000"
    assert quote.body.xfam.hex() == "e71a060000000000"
    assert quote.body.mr_td.hex() == (
        "6363b8043668a3ad953278e10389574d326c6749fb78aa810ecd9336923db86f"
        "22fc00b8dcd404bc10d5e119d7215cbb"
    )
    assert quote.body.tee_tcb_svn2 is None and quote.body.mr_service_td is None
    qe = quote.signed_data.certification.qe_report
    assert (qe.isv_prod_id, qe.isv_svn) == (2, 4)
    assert qe.mr_signer.hex().startswith("dc9e2a7c")
    assert len(quote.signed_data.certification.qe_auth_data) == 32
    assert len(quote.signed_data.certification.pck_chain_der()) == 3
    # The sample carries bytes past its signed data; they are kept, not used.
    assert quote.extra_bytes == b"\nextra bytes(only for testing purpose)\n"


def test_real_v4_signed_bytes_are_header_and_body() -> None:
    raw = vectors.quote_v4()
    quote = parse_quote(raw)

    assert quote.signed_bytes() == raw[: 48 + 584]


def test_real_v5_quote_parses_a_tdx_1_5_body() -> None:
    raw = vectors.quote_v5()
    quote = parse_quote(raw)

    assert quote.version == 5
    assert quote.body_type == 3
    assert struct.unpack_from("<HI", raw, 48) == (3, 648)
    assert quote.body.tee_tcb_svn.hex() == "0b010400000000000000000000000000"
    assert quote.body.tee_tcb_svn2 is not None and len(quote.body.tee_tcb_svn2) == 16
    assert quote.body.mr_service_td is not None and len(quote.body.mr_service_td) == 48
    # v5 signs the body type and size too.
    assert quote.signed_bytes() == raw[: 48 + 6 + 648]
    assert quote.extra_bytes == b""


@pytest.mark.parametrize(("version", "body_type"), [(4, 2), (5, 2), (5, 3)])
def test_signer_quotes_round_trip(version: int, body_type: int) -> None:
    fields = QuoteFields(version=version, body_type=body_type)
    quote = parse_quote(sign_quote(make_pki(), fields))

    assert quote.version == version and quote.body_type == body_type
    assert quote.header.qe_vendor_id == fields.qe_vendor_id
    assert quote.body.mr_td == fields.mr_td
    assert quote.body.rtmrs == fields.rtmrs
    assert quote.body.report_data == fields.report_data
    if body_type == 3:
        assert quote.body.mr_service_td == fields.mr_service_td
    else:
        assert quote.body.mr_service_td is None


def _patched(raw: bytes, offset: int, fmt: str, *values: int) -> bytes:
    data = bytearray(raw)
    struct.pack_into(fmt, data, offset, *values)
    return bytes(data)


# Offsets in the v4 sample: signed data at 0x27C, certification data header at
# 0x27C + 128, QE auth data size at 0x27C + 128 + 6 + 384 + 64.
_SIGNED = 0x27C
_CERT = _SIGNED + 128
_AUTH = _CERT + 6 + 384 + 64


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda raw: raw[:47], "shorter than its 48-byte header"),
        (lambda raw: _patched(raw, 0, "<H", 3), "quote version 3 is not supported"),
        (lambda raw: _patched(raw, 2, "<H", 3), "attestation key type 3"),
        (lambda raw: _patched(raw, 4, "<I", 0), "TEE type 0x0 is not TDX"),
        (lambda raw: raw[:600], "truncated in the TD quote body"),
        (lambda raw: raw[:0x27A], "truncated in the signed data size"),
        (lambda raw: _patched(raw, 0x278, "<I", 0xFFFF), "truncated in the signed data"),
        (lambda raw: _patched(raw, 0x278, "<I", 100), "signed data is 100 bytes"),
        (lambda raw: _patched(raw, _CERT, "<H", 5), "certification data type 5"),
        (lambda raw: _patched(raw, _CERT + 2, "<I", 1000), "certification data size 1000"),
        (lambda raw: _patched(raw, _AUTH, "<H", 0xFFFF), "QE authentication data size"),
        (lambda raw: _patched(raw, _AUTH + 2 + 32, "<H", 6), "nested certification data type"),
        (lambda raw: _patched(raw, _AUTH + 4 + 32, "<I", 7), "PCK certificate chain size 7"),
    ],
)
def test_malformed_v4_quotes_are_refused_naming_what(
    mutate: Callable[[bytes], bytes], message: str
) -> None:
    with pytest.raises(MalformedEvidence, match=message):
        parse_quote(mutate(vectors.quote_v4()))


@pytest.mark.parametrize(
    ("body_type", "size", "message"),
    [
        (1, 384, "body type 1 is not a TD report body"),
        (2, 648, "body size 648 is wrong for body type 2"),
        (3, 584, "body size 584 is wrong for body type 3"),
    ],
)
def test_v5_body_type_and_size_must_agree(body_type: int, size: int, message: str) -> None:
    raw = _patched(vectors.quote_v5(), 48, "<HI", body_type, size)

    with pytest.raises(MalformedEvidence, match=message):
        parse_quote(raw)


def test_v5_quote_without_its_body_descriptor_is_truncated() -> None:
    with pytest.raises(MalformedEvidence, match="v5 body type and size"):
        parse_quote(vectors.quote_v5()[:50])


def test_pem_chain_parsing_is_strict() -> None:
    pem = make_pki().chain_pem()

    assert len(pem_certificates(pem, what="chain")) == 3
    with pytest.raises(MalformedEvidence, match="between PEM blocks"):
        pem_certificates(pem.replace(b"-----\n-----BEGIN", b"-----\njunk-----BEGIN", 1), what="c")
    with pytest.raises(MalformedEvidence, match="after the PEM blocks"):
        pem_certificates(pem + b"trailing", what="c")
    with pytest.raises(MalformedEvidence, match="not a CERTIFICATE"):
        pem_certificates(
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", what="c"
        )
    with pytest.raises(MalformedEvidence, match="no certificate"):
        pem_certificates(b"\x00", what="c")
