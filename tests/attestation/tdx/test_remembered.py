"""What verify() remembers from quote to quote (the certification data's parse,
the attestation key, the chain's time-independent verdict, the QE report's
signature, the collateral's parse and signatures) never stands in for a check
of the bytes in front of it, nor for a check against the time."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from prism_backends.attestation.common import (
    ChainInvalid,
    CollateralUnavailable,
    SignatureInvalid,
)
from prism_backends.attestation.tdx.pck import SGX_EXTENSIONS_OID
from prism_backends.attestation.tdx.pcs import Collateral
from prism_backends.attestation.tdx.roots import bundled_roots
from prism_backends.attestation.tdx.verify import verify
from tests.attestation.tdx import signer, vectors

# Offsets in the real v4 quote: header (48) + body (584) + signed data size
# (4), then the quote signature (64), the attestation key (64), the
# certification data header (6), the QE report (384), its signature (64), the
# QE authentication data's size (2) and the data (32).
QE_VENDOR_ID = 12
MR_TD = 48 + 0x88
REPORT_DATA = 48 + 0x208
QUOTE_SIGNATURE = 48 + 584 + 4
QE_REPORT = QUOTE_SIGNATURE + 64 + 64 + 6
QE_AUTH_DATA = QE_REPORT + 384 + 64 + 2


def flipped(raw: bytes, offset: int) -> bytes:
    changed = bytearray(raw)
    changed[offset] ^= 0x01
    return bytes(changed)


def verify_v4(raw: bytes, now: datetime = vectors.V4_NOW) -> None:
    verify(raw, trusted_roots=bundled_roots(), now=now)


@pytest.mark.parametrize(
    "offset", [QE_VENDOR_ID, MR_TD, REPORT_DATA, QUOTE_SIGNATURE, QUOTE_SIGNATURE + 63]
)
def test_each_quote_has_its_signature_verified_after_a_good_one(offset: int) -> None:
    good = vectors.quote_v4()
    verify_v4(good)

    with pytest.raises(SignatureInvalid, match="quote signature"):
        verify_v4(flipped(good, offset))
    verify_v4(good)


def test_a_changed_attestation_key_is_refused_after_the_good_one() -> None:
    good = vectors.quote_v4()
    verify_v4(good)

    with pytest.raises(SignatureInvalid):
        verify_v4(flipped(good, QUOTE_SIGNATURE + 64 + 10))


def test_a_changed_byte_of_a_remembered_qe_report_is_refused() -> None:
    good = vectors.quote_v4()
    verify_v4(good)

    with pytest.raises(SignatureInvalid, match="QE report signature"):
        verify_v4(flipped(good, QE_REPORT + 0x30))


def test_a_changed_byte_of_remembered_qe_auth_data_breaks_the_binding() -> None:
    good = vectors.quote_v4()
    verify_v4(good)

    with pytest.raises(SignatureInvalid, match="does not bind the attestation key"):
        verify_v4(flipped(good, QE_AUTH_DATA))


def test_a_remembered_chain_is_checked_against_now_on_every_quote() -> None:
    good = vectors.quote_v4()
    for _ in range(2):
        verify_v4(good)
        with pytest.raises(ChainInvalid, match="expired at 2029-09-20"):
            verify_v4(good, now=datetime(2053, 7, 1, tzinfo=UTC))
        with pytest.raises(ChainInvalid, match="not valid before"):
            verify_v4(good, now=datetime(2018, 1, 1, tzinfo=UTC))


def test_the_same_root_in_another_object_is_still_trusted() -> None:
    """The chain's verdict is remembered per certificate object; an equal root
    loaded again is checked afresh and trusted."""
    root = bundled_roots()[0]
    again = x509.load_der_x509_certificate(root.public_bytes(Encoding.DER))
    for roots in ([root], [again], [root]):
        verify(vectors.quote_v4(), trusted_roots=roots, now=vectors.V4_NOW)


def test_a_trusted_root_does_not_lend_its_verdict_to_an_untrusted_one() -> None:
    verify_v4(vectors.quote_v4())
    with pytest.raises(ChainInvalid, match="which is not trusted"):
        verify(vectors.quote_v4(), trusted_roots=[signer.make_root().cert], now=vectors.V4_NOW)


# --- collateral: parsed and its signatures checked once per bytes ----------------


def verify_with_collateral(collateral: Collateral, now: datetime = vectors.V4_NOW) -> None:
    verify(vectors.quote_v4(), trusted_roots=bundled_roots(), now=now, collateral=collateral)


def test_remembered_collateral_still_goes_stale() -> None:
    collateral = vectors.collateral_v4()
    for _ in range(2):
        verify_with_collateral(collateral)
        # The PCK CRL and the QE identity have their next update on 2023-07-08.
        with pytest.raises(CollateralUnavailable, match="stale"):
            verify_with_collateral(collateral, now=datetime(2023, 7, 9, tzinfo=UTC))


def test_a_changed_byte_of_remembered_collateral_is_refused() -> None:
    collateral = vectors.collateral_v4()
    verify_with_collateral(collateral)
    tampered_tcb_info = collateral.tcb_info.replace(
        b'"tcbEvaluationDataNumber":15', b'"tcbEvaluationDataNumber":16'
    )
    # The last byte of a DER CRL is the last byte of its signature's s.
    tampered_crl = flipped(collateral.root_crl, len(collateral.root_crl) - 1)

    with pytest.raises(SignatureInvalid, match="TCB info signature"):
        verify_with_collateral(dataclasses.replace(collateral, tcb_info=tampered_tcb_info))
    with pytest.raises(SignatureInvalid, match="root CA CRL signature"):
        verify_with_collateral(dataclasses.replace(collateral, root_crl=tampered_crl))
    verify_with_collateral(collateral)


def test_remembered_crls_are_applied_to_each_quotes_pck_certificate() -> None:
    pki = signer.make_pki()
    sgx = x509.UnrecognizedExtension(
        x509.ObjectIdentifier(SGX_EXTENSIONS_OID), signer.sgx_extensions_der(signer.PckTcb())
    )
    sibling = dataclasses.replace(
        pki,
        pck=signer.issue(
            signer.name(signer.PCK_CN), signer.new_key(), pki.ca, ca=False, extensions=[sgx]
        ),
    )
    # One PCK CRL, from the CA both PCK certificates share, revoking the sibling.
    collateral = signer.make_collateral(sibling, signer.CollateralSpec(revoked_pck=True))

    for _ in range(2):
        verify(
            signer.sign_quote(pki),
            trusted_roots=[pki.root.cert],
            now=signer.NOW,
            collateral=collateral,
        )
        with pytest.raises(ChainInvalid, match="revoked by the PCK CRL"):
            verify(
                signer.sign_quote(sibling),
                trusted_roots=[pki.root.cert],
                now=signer.NOW,
                collateral=collateral,
            )
