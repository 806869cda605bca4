"""Verifying quotes from the test signer: each check of verify() both ways."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from prism_backends.attestation.common import (
    ChainInvalid,
    CollateralUnavailable,
    MalformedEvidence,
    SignatureInvalid,
)
from prism_backends.attestation.tdx.roots import bundled_roots
from prism_backends.attestation.tdx.verify import VerifiedTdx, verify
from tests.attestation.tdx.signer import (
    NOW,
    PLATFORM_CA_CN,
    TCB_SIGNING_CN,
    CollateralSpec,
    PckTcb,
    Pki,
    QuoteFields,
    enclave_level,
    issue,
    make_collateral,
    make_crl,
    make_pki,
    make_root,
    name,
    new_key,
    sign_quote,
    signed_json,
    tcb_info_value,
    tcb_level,
)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


@pytest.mark.parametrize(("version", "body_type"), [(4, 2), (5, 2), (5, 3)])
def test_a_signed_quote_verifies_against_its_root(pki: Pki, version: int, body_type: int) -> None:
    fields = QuoteFields(version=version, body_type=body_type)

    result = verify(sign_quote(pki, fields), trusted_roots=[pki.root.cert], now=NOW)

    assert result.verified.measurement == fields.mr_td.hex()
    assert result.verified.report_data == fields.report_data
    assert result.verified.claims["rtmr3"] == fields.rtmrs[3].hex()
    assert result.pck.fmspc == PckTcb().fmspc
    assert result.pck.tcb_components == PckTcb().components
    assert result.pck_chain[0] == pki.pck.cert


def test_a_chain_ending_in_a_root_we_did_not_bundle_is_refused(pki: Pki) -> None:
    with pytest.raises(ChainInvalid, match="which is not trusted"):
        verify(sign_quote(pki), trusted_roots=bundled_roots(), now=NOW)


def test_a_root_with_a_trusted_roots_name_but_another_key_is_refused(pki: Pki) -> None:
    impostor = make_root()  # same subject name as pki.root, fresh key

    with pytest.raises(ChainInvalid, match="which is not trusted"):
        verify(sign_quote(pki), trusted_roots=[impostor.cert], now=NOW)


def test_a_chain_whose_ca_another_root_signed_is_refused(pki: Pki) -> None:
    other = make_pki()
    chain = pki.pck.pem() + other.ca.pem() + pki.root.pem()

    with pytest.raises(ChainInvalid, match=r"does not validate.*signature does not match"):
        verify(sign_quote(pki, chain_pem=chain), trusted_roots=[pki.root.cert], now=NOW)


def test_no_trusted_roots_trusts_nothing(pki: Pki) -> None:
    with pytest.raises(ChainInvalid, match="no trusted root"):
        verify(sign_quote(pki), trusted_roots=[], now=NOW)


def test_an_expired_pck_certificate_is_refused() -> None:
    pki = make_pki(pck_not_before=NOW - timedelta(days=60), pck_not_after=NOW - timedelta(days=1))

    with pytest.raises(ChainInvalid, match="'Intel SGX PCK Certificate' expired at"):
        verify(sign_quote(pki), trusted_roots=[pki.root.cert], now=NOW)


def test_a_pck_certificate_not_yet_valid_is_refused() -> None:
    pki = make_pki(pck_not_before=NOW + timedelta(days=1))

    with pytest.raises(ChainInvalid, match="not valid before"):
        verify(sign_quote(pki), trusted_roots=[pki.root.cert], now=NOW)


def test_the_whole_chain_expires(pki: Pki) -> None:
    with pytest.raises(ChainInvalid, match="expired"):
        verify(sign_quote(pki), trusted_roots=[pki.root.cert], now=NOW + timedelta(days=3651))


def test_a_qe_report_that_does_not_bind_the_attestation_key_is_refused(pki: Pki) -> None:
    raw = sign_quote(pki, QuoteFields(bind_attestation_key=False))

    with pytest.raises(SignatureInvalid, match="does not bind the attestation key"):
        verify(raw, trusted_roots=[pki.root.cert], now=NOW)


def test_a_qe_report_whose_binding_tail_is_not_zero_is_refused(pki: Pki) -> None:
    raw = sign_quote(pki, QuoteFields(qe_report_data_tail=bytes(31) + b"\x01"))

    with pytest.raises(SignatureInvalid, match="does not bind the attestation key"):
        verify(raw, trusted_roots=[pki.root.cert], now=NOW)


def test_empty_qe_auth_data_still_binds(pki: Pki) -> None:
    raw = sign_quote(pki, QuoteFields(qe_auth_data=b""))

    result = verify(raw, trusted_roots=[pki.root.cert], now=NOW)

    assert result.quote.signed_data.certification.qe_auth_data == b""


def test_a_qe_report_signed_by_another_key_is_refused(pki: Pki) -> None:
    raw = sign_quote(pki, qe_signing_key=new_key())

    with pytest.raises(SignatureInvalid, match="QE report signature"):
        verify(raw, trusted_roots=[pki.root.cert], now=NOW)


def test_a_quote_signed_by_another_attestation_key_is_refused(pki: Pki) -> None:
    raw = bytearray(sign_quote(pki))
    raw[0x27C] ^= 0x01  # first byte of the signature's r

    with pytest.raises(SignatureInvalid, match="quote signature"):
        verify(bytes(raw), trusted_roots=[pki.root.cert], now=NOW)


def test_a_leaf_that_is_not_a_pck_certificate_is_refused() -> None:
    pki = make_pki(pck_cn="Somebody's Certificate")

    with pytest.raises(ChainInvalid, match="expected 'Intel SGX PCK Certificate'"):
        verify(sign_quote(pki), trusted_roots=[pki.root.cert], now=NOW)


def test_a_ca_that_is_not_a_pck_ca_is_refused() -> None:
    pki = make_pki(ca_cn="Some CA")

    with pytest.raises(ChainInvalid, match="the CA is 'Some CA'"):
        verify(sign_quote(pki), trusted_roots=[pki.root.cert], now=NOW)


def test_a_processor_ca_is_accepted() -> None:
    pki = make_pki(ca_cn="Intel SGX PCK Processor CA")

    assert verify(sign_quote(pki), trusted_roots=[pki.root.cert], now=NOW).quote


def test_a_pck_certificate_without_sgx_extensions_is_refused() -> None:
    pki = make_pki(sgx_extension=False)

    with pytest.raises(ChainInvalid, match="no SGX extensions"):
        verify(sign_quote(pki), trusted_roots=[pki.root.cert], now=NOW)


def test_a_certificate_not_signed_with_ecdsa_sha256_is_refused() -> None:
    root = make_root()
    ca = issue(name(PLATFORM_CA_CN), new_key(), root, ca=True, path_length=0)
    base = make_pki(root=root)
    pck = issue(
        base.pck.cert.subject,
        base.pck.key,
        ca,
        ca=False,
        extensions=[
            base.pck.cert.extensions.get_extension_for_oid(
                x509.ObjectIdentifier("1.2.840.113741.1.13.1")
            ).value
        ],
        signature_hash=hashes.SHA384(),
    )
    pki = dataclasses.replace(base, ca=ca, pck=pck)

    with pytest.raises(ChainInvalid, match="not signed with ECDSA-SHA256"):
        verify(sign_quote(pki), trusted_roots=[root.cert], now=NOW)


def test_a_chain_of_two_certificates_is_malformed(pki: Pki) -> None:
    chain = pki.pck.pem() + pki.ca.pem()

    with pytest.raises(MalformedEvidence, match="holds 2 certificate"):
        verify(sign_quote(pki, chain_pem=chain), trusted_roots=[pki.root.cert], now=NOW)


def test_a_chain_certificate_that_does_not_parse_is_malformed(pki: Pki) -> None:
    chain = pki.pck.pem() + b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    chain += pki.root.pem()

    with pytest.raises(MalformedEvidence, match="does not parse"):
        verify(sign_quote(pki, chain_pem=chain), trusted_roots=[pki.root.cert], now=NOW)


def test_an_attestation_key_off_the_curve_is_refused(pki: Pki) -> None:
    raw = bytearray(sign_quote(pki))
    raw[0x27C + 64 : 0x27C + 128] = bytes(64)

    with pytest.raises(SignatureInvalid, match="not a P-256 point"):
        verify(bytes(raw), trusted_roots=[pki.root.cert], now=NOW)


# --- collateral ----------------------------------------------------------------


def _verify_with(pki: Pki, spec: CollateralSpec, fields: QuoteFields | None = None) -> VerifiedTdx:
    return verify(
        sign_quote(pki, fields),
        trusted_roots=[pki.root.cert],
        now=NOW,
        collateral=make_collateral(pki, spec),
    )


def _tcb(pki: Pki, spec: CollateralSpec, fields: QuoteFields | None = None) -> dict[str, object]:
    result = _verify_with(pki, spec, fields)
    assert result.tcb is not None
    return dataclasses.asdict(result.tcb)


def test_an_up_to_date_platform(pki: Pki) -> None:
    tcb = _tcb(pki, CollateralSpec())

    assert tcb["status"] == "UpToDate"
    assert tcb["platform_status"] == "UpToDate" and tcb["qe_status"] == "UpToDate"
    assert tcb["tcb_date"] == "2029-01-01T00:00:00Z"
    assert tcb["tcb_evaluation_data_number"] == 16


def test_issuer_chains_may_come_url_decoded(pki: Pki) -> None:
    assert _tcb(pki, CollateralSpec(url_encoded_chains=False))["status"] == "UpToDate"


def test_an_out_of_date_tdx_tcb(pki: Pki) -> None:
    fields = QuoteFields(tee_tcb_svn=bytes([3, 0, 4]) + bytes(13))

    tcb = _tcb(pki, CollateralSpec(), fields)

    assert tcb["status"] == "OutOfDate"
    assert tcb["advisory_ids"] == ("INTEL-SA-00001",)


def test_a_platform_below_every_level_is_not_supported(pki: Pki) -> None:
    fields = QuoteFields(tee_tcb_svn=bytes([3, 0, 2]) + bytes(13))

    assert _tcb(pki, CollateralSpec(), fields)["status"] == "TcbNotSupported"


def test_the_pck_tcb_selects_the_level_too() -> None:
    pki = make_pki(tcb=PckTcb(pce_svn=12))

    assert _tcb(pki, CollateralSpec())["platform_status"] == "TcbNotSupported"


def test_a_revoked_tcb_level_is_refused(pki: Pki) -> None:
    spec = CollateralSpec(tcb_levels=[tcb_level("Revoked")])

    with pytest.raises(ChainInvalid, match="platform TCB level is revoked"):
        _verify_with(pki, spec)


def test_an_out_of_date_qe_makes_an_up_to_date_platform_out_of_date(pki: Pki) -> None:
    tcb = _tcb(pki, CollateralSpec(), QuoteFields(qe_isv_svn=3))

    assert tcb["platform_status"] == "UpToDate"
    assert tcb["qe_status"] == "OutOfDate"
    assert tcb["status"] == "OutOfDate"


def test_configuration_needed_with_an_out_of_date_qe(pki: Pki) -> None:
    spec = CollateralSpec(tcb_levels=[tcb_level("ConfigurationNeeded")])

    tcb = _tcb(pki, spec, QuoteFields(qe_isv_svn=3))

    assert tcb["status"] == "OutOfDateConfigurationNeeded"


def test_a_revoked_qe_is_refused(pki: Pki) -> None:
    spec = CollateralSpec(qe_levels=[enclave_level(4, "Revoked")])

    with pytest.raises(ChainInvalid, match="QE TCB level is revoked"):
        _verify_with(pki, spec)


def test_a_qe_that_is_not_intels_td_qe_is_refused(pki: Pki) -> None:
    with pytest.raises(ChainInvalid, match="MRSIGNER"):
        _verify_with(pki, CollateralSpec(), QuoteFields(qe_mr_signer=bytes(32)))
    with pytest.raises(ChainInvalid, match="ISVPRODID"):
        _verify_with(pki, CollateralSpec(), QuoteFields(qe_isv_prod_id=1))
    with pytest.raises(ChainInvalid, match="ATTRIBUTES"):
        _verify_with(pki, CollateralSpec(), QuoteFields(qe_attributes=bytes(16)))
    with pytest.raises(ChainInvalid, match="MISCSELECT"):
        _verify_with(pki, CollateralSpec(), QuoteFields(qe_misc_select=1))


def test_a_tdx_module_that_tcb_info_does_not_know_is_refused(pki: Pki) -> None:
    with pytest.raises(ChainInvalid, match="MRSIGNERSEAM"):
        _verify_with(pki, CollateralSpec(), QuoteFields(mr_signer_seam=bytes([1]) * 48))
    with pytest.raises(ChainInvalid, match="SEAM attributes"):
        _verify_with(pki, CollateralSpec(), QuoteFields(seam_attributes=bytes([1]) + bytes(7)))


def _module_identity(status: str) -> dict[str, object]:
    return {
        "id": "TDX_01",
        "mrsigner": "00" * 48,
        "attributes": "0000000000000000",
        "attributesMask": "FFFFFFFFFFFFFFFF",
        "tcbLevels": [enclave_level(3, status)],
    }


def test_a_tdx_module_version_has_its_own_identity_and_tcb(pki: Pki) -> None:
    fields = QuoteFields(tee_tcb_svn=bytes([3, 1, 5]) + bytes(13))
    levels = [tcb_level("UpToDate", tdx=(9, 9, 5) + (0,) * 13)]  # first two skipped

    up = _tcb(
        pki,
        CollateralSpec(tcb_levels=levels, tdx_module_identities=[_module_identity("UpToDate")]),
        fields,
    )
    out = _tcb(
        pki,
        CollateralSpec(tcb_levels=levels, tdx_module_identities=[_module_identity("OutOfDate")]),
        fields,
    )

    assert (up["status"], up["tdx_module_status"]) == ("UpToDate", "UpToDate")
    assert (out["status"], out["tdx_module_status"]) == ("OutOfDate", "OutOfDate")
    with pytest.raises(ChainInvalid, match="no TDX module identity TDX_01"):
        _verify_with(pki, CollateralSpec(tcb_levels=levels), fields)


def test_a_revoked_pck_certificate_is_refused(pki: Pki) -> None:
    with pytest.raises(ChainInvalid, match="revoked by the PCK CRL"):
        _verify_with(pki, CollateralSpec(revoked_pck=True))


def test_a_revoked_pck_ca_is_refused(pki: Pki) -> None:
    with pytest.raises(ChainInvalid, match="revoked by the root CA CRL"):
        _verify_with(pki, CollateralSpec(revoked_ca=True))


def test_stale_crls_are_refused(pki: Pki) -> None:
    with pytest.raises(CollateralUnavailable, match="CRL is stale"):
        _verify_with(pki, CollateralSpec(crl_next_update=NOW - timedelta(seconds=1)))


def test_a_crl_signed_by_another_key_is_refused(pki: Pki) -> None:
    collateral = make_collateral(pki)
    forged = make_crl(pki.ca, signing_key=new_key())

    with pytest.raises(SignatureInvalid, match="PCK CRL signature"):
        verify(
            sign_quote(pki),
            trusted_roots=[pki.root.cert],
            now=NOW,
            collateral=dataclasses.replace(collateral, pck_crl=forged),
        )


def test_a_crl_of_another_issuer_is_refused(pki: Pki) -> None:
    collateral = make_collateral(pki)

    with pytest.raises(CollateralUnavailable, match="PCK CRL is issued by"):
        verify(
            sign_quote(pki),
            trusted_roots=[pki.root.cert],
            now=NOW,
            collateral=dataclasses.replace(collateral, pck_crl=collateral.root_crl),
        )


def test_stale_tcb_info_is_refused(pki: Pki) -> None:
    with pytest.raises(CollateralUnavailable, match="TCB info is stale"):
        _verify_with(pki, CollateralSpec(next_update=NOW - timedelta(seconds=1)))


def test_tcb_info_of_another_platform_is_refused(pki: Pki) -> None:
    with pytest.raises(CollateralUnavailable, match="FMSPC 00606a000000"):
        _verify_with(pki, CollateralSpec(fmspc=bytes.fromhex("00606a000000")))
    with pytest.raises(CollateralUnavailable, match="PCE ID 0001"):
        _verify_with(pki, CollateralSpec(pce_id=b"\x00\x01"))


def test_tcb_info_and_qe_identity_of_the_wrong_kind_are_refused(pki: Pki) -> None:
    with pytest.raises(CollateralUnavailable, match="expected 'TDX' version 3"):
        _verify_with(pki, CollateralSpec(tcb_info_id="SGX"))
    with pytest.raises(CollateralUnavailable, match="expected 'TDX' version 3"):
        _verify_with(pki, CollateralSpec(tcb_info_version=2))
    with pytest.raises(CollateralUnavailable, match="expected 'TD_QE' version 2"):
        _verify_with(pki, CollateralSpec(qe_identity_id="QE"))


def test_tcb_info_signed_by_an_untrusted_signer_is_refused(pki: Pki) -> None:
    other = make_pki()
    collateral = make_collateral(pki)
    forged = dataclasses.replace(
        collateral,
        tcb_info=signed_json(other.tcb_signing, "tcbInfo", tcb_info_value(CollateralSpec())),
        tcb_info_issuer_chain=other.tcb_signing_chain(),
    )

    with pytest.raises(ChainInvalid, match="TCB info signing chain ends in root"):
        verify(sign_quote(pki), trusted_roots=[pki.root.cert], now=NOW, collateral=forged)


def test_tcb_info_signed_by_a_certificate_that_is_not_a_tcb_signer_is_refused(pki: Pki) -> None:
    imposter = issue(name("Intel SGX Something Else"), new_key(), pki.root, ca=False)
    collateral = make_collateral(pki)
    forged = dataclasses.replace(
        collateral,
        tcb_info=signed_json(imposter, "tcbInfo", tcb_info_value(CollateralSpec())),
        tcb_info_issuer_chain=imposter.pem() + pki.root.pem(),
    )

    with pytest.raises(ChainInvalid, match=f"expected '{TCB_SIGNING_CN}'"):
        verify(sign_quote(pki), trusted_roots=[pki.root.cert], now=NOW, collateral=forged)


def test_a_revoked_tcb_signing_certificate_is_refused(pki: Pki) -> None:
    collateral = make_collateral(pki)
    root_crl = make_crl(pki.root, revoked=(pki.tcb_signing.cert.serial_number,))

    with pytest.raises(ChainInvalid, match=r"'Intel SGX TCB Signing'.*revoked"):
        verify(
            sign_quote(pki),
            trusted_roots=[pki.root.cert],
            now=NOW,
            collateral=dataclasses.replace(collateral, root_crl=root_crl),
        )


def test_a_qe_identity_whose_signature_does_not_match_is_refused(pki: Pki) -> None:
    collateral = make_collateral(pki)
    tampered = collateral.qe_identity.replace(b'"isvprodid":2', b'"isvprodid":3')

    with pytest.raises(SignatureInvalid, match="QE identity signature"):
        verify(
            sign_quote(pki),
            trusted_roots=[pki.root.cert],
            now=NOW,
            collateral=dataclasses.replace(collateral, qe_identity=tampered),
        )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"tcbInfo":{},"tcbInfo":{},"signature":"00"}', "appears twice"),
        (b'{"tcbInfo":{}}', "needs 'tcbInfo' and 'signature'"),
        (b'{"tcbInfo":{},"signature":"00"}', "signature is not 64 bytes"),
        (b'{"tcbInfo":{},"signature":"' + b"0" * 128 + b'"} x', "after the JSON"),
        (b'{"tcbInfo":{"a":1,"a":2},"signature":"00"}', "bad JSON"),
        (b"\xff", "not UTF-8"),
        (b"[]", "not a JSON object"),
    ],
)
def test_malformed_pcs_bodies_are_refused(pki: Pki, body: bytes, message: str) -> None:
    collateral = dataclasses.replace(make_collateral(pki), tcb_info=body)

    with pytest.raises(CollateralUnavailable, match=message):
        verify(sign_quote(pki), trusted_roots=[pki.root.cert], now=NOW, collateral=collateral)
