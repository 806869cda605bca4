"""Signature and chain verification: the real Milan sample and synthetic chains."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtensionOID
from hypothesis import given, settings
from hypothesis import strategies as st

from prism_backends.attestation.common import (
    AttestationError,
    ChainInvalid,
    CollateralUnavailable,
    MalformedEvidence,
    SignatureInvalid,
)
from prism_backends.attestation.snp import abi, kds
from prism_backends.attestation.snp.roots import bundled_roots
from prism_backends.attestation.snp.trust import ProductRoots, product_roots_from_pem
from prism_backends.attestation.snp.verify import VerifiedSnp, verify

from . import samples
from .signer import NOW, ReportSpec, hierarchy, signed

ROOTS = bundled_roots()
MILAN = hierarchy(abi.MILAN)
VLEK_SIGNER = 1 << 2


class FakeFetcher:
    """Answers from a dict of URL -> bytes; records what was asked."""

    def __init__(self, responses: dict[str, bytes] | None = None, error: Exception | None = None):
        self.responses = responses or {}
        self.error = error
        self.urls: list[str] = []

    def get(self, url: str) -> bytes:
        self.urls.append(url)
        if self.error is not None:
            raise self.error
        if url not in self.responses:
            raise CollateralUnavailable(f"offline: {url}")
        return self.responses[url]


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def _synthetic(spec: ReportSpec = ReportSpec(), **kwargs: object) -> tuple[bytes, bytes]:
    """A report signed by a synthetic VCEK matching it, and that VCEK (DER)."""
    endorsement = MILAN.endorsement(tcb=spec.reported_tcb, chip_id=spec.chip_id, **kwargs)  # type: ignore[arg-type]
    return signed(spec, endorsement), endorsement.der


# --- The real sample ---------------------------------------------------------------


def test_real_sample_verifies() -> None:
    result = verify(samples.REPORT, roots=ROOTS, now=samples.NOW, vcek=samples.VCEK)
    assert isinstance(result, VerifiedSnp)
    assert result.product == "Milan"
    assert result.signing_key is abi.SigningKey.VCEK
    assert result.endorsement.product_name == "Milan-B0"
    verified = result.verified
    assert verified.platform == "sev-snp"
    assert verified.measurement == samples.MEASUREMENT
    assert verified.report_data == bytes([1, 2, 3, 4, 5]) + bytes(59)
    assert verified.tcb["reported_tcb"] == {
        "raw": 0x4405000000000002,
        "bl": 2,
        "tee": 0,
        "snp": 5,
        "microcode": 68,
    }
    assert verified.tcb["current_version"] == "1.49.3"
    assert verified.claims["chip_id"] == samples.CHIP_ID.hex()
    assert verified.claims["signing_key"] == "VCEK"
    assert verified.claims["policy"] == 0xB0000


def test_real_sample_verifies_with_pem_vcek_and_pinned_product() -> None:
    body = base64.encodebytes(samples.VCEK)
    pem = b"-----BEGIN CERTIFICATE-----\n" + body + b"-----END CERTIFICATE-----\n"
    result = verify(samples.REPORT, roots=ROOTS, now=samples.NOW, vcek=pem, product="milan")
    assert result.product == "Milan"


def test_real_sample_with_its_certificate_table() -> None:
    milan = ROOTS["Milan"]
    assert milan.ask is not None
    table = abi.encode_cert_table(
        [
            (abi.VCEK_GUID, samples.VCEK),
            (abi.ASK_GUID, _der(milan.ask)),
            (abi.ARK_GUID, _der(milan.ark)),
        ]
    )
    result = verify(samples.REPORT + table, roots=ROOTS, now=samples.NOW)
    assert result.certificates.vcek == samples.VCEK


def test_real_sample_fetches_its_vcek_from_kds() -> None:
    fetcher = FakeFetcher({samples.KDS_URL: samples.VCEK})
    result = verify(samples.REPORT, roots=ROOTS, now=samples.NOW, fetcher=fetcher, product="Milan")
    assert fetcher.urls == [samples.KDS_URL]
    assert result.product == "Milan"


def test_table_certificate_is_preferred_over_fetching() -> None:
    fetcher = FakeFetcher()
    table = abi.encode_cert_table([(abi.VCEK_GUID, samples.VCEK)])
    verify(samples.REPORT + table, roots=ROOTS, now=samples.NOW, fetcher=fetcher)
    assert fetcher.urls == []


def test_without_any_vcek_collateral_is_unavailable() -> None:
    with pytest.raises(CollateralUnavailable, match="no VCEK certificate"):
        verify(samples.REPORT, roots=ROOTS, now=samples.NOW)


def test_fetching_a_v2_report_needs_the_product() -> None:
    fetcher = FakeFetcher({samples.KDS_URL: samples.VCEK})
    with pytest.raises(CollateralUnavailable, match="pass product="):
        verify(samples.REPORT, roots=ROOTS, now=samples.NOW, fetcher=fetcher)
    assert fetcher.urls == []


@pytest.mark.parametrize(
    "error", [CollateralUnavailable("offline"), OSError("connection refused"), TimeoutError()]
)
def test_fetch_failures_are_collateral_unavailable(error: Exception) -> None:
    fetcher = FakeFetcher(error=error)
    with pytest.raises(CollateralUnavailable):
        verify(samples.REPORT, roots=ROOTS, now=samples.NOW, fetcher=fetcher, product="Milan")


@settings(max_examples=300, deadline=None)
@given(offset=st.integers(0, abi.SIGNATURE_OFFSET - 1), mask=st.integers(1, 255))
def test_flipping_any_signed_byte_is_rejected(offset: int, mask: int) -> None:
    raw = bytearray(samples.REPORT)
    raw[offset] ^= mask
    with pytest.raises((MalformedEvidence, SignatureInvalid, ChainInvalid)):
        verify(bytes(raw), roots=ROOTS, now=samples.NOW, vcek=samples.VCEK)


@settings(max_examples=300, deadline=None)
@given(offset=st.integers(abi.SIGNATURE_OFFSET, abi.REPORT_SIZE - 1), mask=st.integers(1, 255))
def test_flipping_any_signature_byte_is_rejected(offset: int, mask: int) -> None:
    raw = bytearray(samples.REPORT)
    raw[offset] ^= mask
    expected = SignatureInvalid if offset < abi.SIGNATURE_OFFSET + 144 else MalformedEvidence
    with pytest.raises(expected):
        verify(bytes(raw), roots=ROOTS, now=samples.NOW, vcek=samples.VCEK)


def test_flipping_a_reported_tcb_byte_breaks_the_signature() -> None:
    raw = bytearray(samples.REPORT)
    raw[0x180] ^= 1
    with pytest.raises(SignatureInvalid, match="report's signature"):
        verify(bytes(raw), roots=ROOTS, now=samples.NOW, vcek=samples.VCEK)


# --- Products and roots --------------------------------------------------------------


def test_pinning_another_product_is_rejected() -> None:
    with pytest.raises(ChainInvalid, match="for product Milan, expected Genoa"):
        verify(samples.REPORT, roots=ROOTS, now=samples.NOW, vcek=samples.VCEK, product="Genoa")


def test_roots_of_other_products_only_are_rejected() -> None:
    others = {name: roots for name, roots in ROOTS.items() if name != "Milan"}
    with pytest.raises(ChainInvalid, match="no trusted AMD roots for product Milan"):
        verify(samples.REPORT, roots=others, now=samples.NOW, vcek=samples.VCEK)


def test_genoa_roots_filed_under_milan_are_rejected() -> None:
    with pytest.raises(ChainInvalid, match="are Genoa's"):
        verify(samples.REPORT, roots={"Milan": ROOTS["Genoa"]}, now=samples.NOW, vcek=samples.VCEK)


def test_genoa_keys_relabelled_milan_are_rejected() -> None:
    genoa = ROOTS["Genoa"]
    fake = ProductRoots(product="Milan", ark=genoa.ark, ask=genoa.ask, asvk=genoa.asvk)
    with pytest.raises(ChainInvalid, match="ARK-Milan"):
        verify(samples.REPORT, roots={"Milan": fake}, now=samples.NOW, vcek=samples.VCEK)


def test_milan_ark_with_genoa_ask_is_rejected() -> None:
    fake = ProductRoots(product="Milan", ark=ROOTS["Milan"].ark, ask=ROOTS["Genoa"].ask)
    with pytest.raises(ChainInvalid, match="SEV-Milan"):
        verify(samples.REPORT, roots={"Milan": fake}, now=samples.NOW, vcek=samples.VCEK)


def test_a_chain_ending_in_a_root_we_did_not_bundle_is_rejected() -> None:
    raw, vcek = _synthetic()
    table = abi.encode_cert_table(
        [(abi.VCEK_GUID, vcek), (abi.ASK_GUID, _der(MILAN.ask)), (abi.ARK_GUID, _der(MILAN.ark))]
    )
    with pytest.raises(ChainInvalid, match="not a trusted AMD root for Milan"):
        verify(raw + table, roots=ROOTS, now=NOW)


def test_an_ask_from_a_root_we_did_not_bundle_does_not_verify() -> None:
    raw, vcek = _synthetic()
    table = abi.encode_cert_table([(abi.VCEK_GUID, vcek), (abi.ASK_GUID, _der(MILAN.ask))])
    with pytest.raises(SignatureInvalid, match="ASK certificate's signature"):
        verify(raw + table, roots=ROOTS, now=NOW)


def test_a_synthetic_vcek_does_not_verify_under_amds_ask() -> None:
    raw, vcek = _synthetic()
    with pytest.raises(SignatureInvalid, match="VCEK certificate's signature"):
        verify(raw, roots=ROOTS, now=NOW, vcek=vcek)


def test_the_real_vcek_does_not_verify_under_synthetic_roots() -> None:
    with pytest.raises(SignatureInvalid, match="ASK"):
        verify(samples.REPORT, roots=MILAN.roots(), now=samples.NOW, vcek=samples.VCEK)


def test_bundled_roots_cover_three_products() -> None:
    assert set(ROOTS) == {"Milan", "Genoa", "Turin"}
    for product, roots in ROOTS.items():
        assert roots.product == product
        assert roots.ask is not None and roots.asvk is not None
        cns = [
            c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
            for c in (roots.ark, roots.ask, roots.asvk)
        ]
        assert cns == [f"ARK-{product}", f"SEV-{product}", f"SEV-VLEK-{product}"]


def test_root_bundles_must_share_their_ark() -> None:
    milan = (ROOTS["Milan"].ask, ROOTS["Milan"].ark)
    genoa = (ROOTS["Genoa"].asvk, ROOTS["Genoa"].ark)
    pem = [b"".join(c.public_bytes(Encoding.PEM) for c in pair if c) for pair in (milan, genoa)]
    with pytest.raises(ChainInvalid, match="different ARKs"):
        product_roots_from_pem("Milan", pem[0], pem[1])


# --- Time ----------------------------------------------------------------------------


def test_an_expired_vcek_is_rejected() -> None:
    later = datetime(2030, 1, 1, tzinfo=UTC)
    with pytest.raises(ChainInvalid, match="VCEK certificate expired at 2029-09-24"):
        verify(samples.REPORT, roots=ROOTS, now=later, vcek=samples.VCEK)


def test_a_vcek_not_yet_valid_is_rejected() -> None:
    earlier = datetime(2022, 1, 1, tzinfo=UTC)
    with pytest.raises(ChainInvalid, match="VCEK certificate is not valid until 2022-09-24"):
        verify(samples.REPORT, roots=ROOTS, now=earlier, vcek=samples.VCEK)


def test_an_expired_ark_is_rejected() -> None:
    with pytest.raises(ChainInvalid, match="ARK certificate expired"):
        verify(samples.REPORT, roots=ROOTS, now=datetime(2046, 1, 1, tzinfo=UTC), vcek=samples.VCEK)


def test_now_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        verify(samples.REPORT, roots=ROOTS, now=datetime(2025, 1, 1), vcek=samples.VCEK)


# --- Synthetic chains: the certificate must match the report -----------------------------


def test_a_synthetic_report_verifies_under_synthetic_roots() -> None:
    raw, vcek = _synthetic()
    result = verify(raw, roots=MILAN.roots(), now=NOW, vcek=vcek)
    assert result.product == "Milan"
    assert result.verified.claims["cpuid_fam_id"] == 0x19


@pytest.mark.parametrize(
    ("field", "certified"),
    [
        ("blSPL", {"bl": 4}),
        ("teeSPL", {"tee": 1}),
        ("snpSPL", {"snp": 13}),
        ("ucodeSPL", {"microcode": 210}),
        ("spl4", {"reserved": (1, 0, 0, 0)}),
    ],
)
def test_a_report_whose_tcb_disagrees_with_its_vcek_is_rejected(
    field: str, certified: dict[str, object]
) -> None:
    spec = ReportSpec()
    parts = {"bl": 3, "tee": 0, "snp": 14, "microcode": 209} | certified
    cert_tcb = abi.compose_tcb(abi.MILAN, **parts)  # type: ignore[arg-type]
    vcek = MILAN.endorsement(tcb=cert_tcb, chip_id=spec.chip_id)
    with pytest.raises(ChainInvalid, match=f"VCEK certificate's {field} is"):
        verify(signed(spec, vcek), roots=MILAN.roots(), now=NOW, vcek=vcek.der)


def test_a_vcek_of_another_chip_is_rejected() -> None:
    spec = ReportSpec()
    vcek = MILAN.endorsement(tcb=spec.reported_tcb, chip_id=bytes(range(100, 164)))
    with pytest.raises(ChainInvalid, match=r"hwid 6465.* does not match the report's CHIP_ID 0102"):
        verify(signed(spec, vcek), roots=MILAN.roots(), now=NOW, vcek=vcek.der)


def test_a_masked_chip_id_is_not_compared() -> None:
    spec = ReportSpec(signer_info=0b10, chip_id=bytes(64))
    vcek = MILAN.endorsement(tcb=spec.reported_tcb, chip_id=bytes(range(64)))
    result = verify(signed(spec, vcek), roots=MILAN.roots(), now=NOW, vcek=vcek.der)
    assert result.verified.claims["mask_chip_key"] is True


def test_a_zero_chip_id_without_the_mask_bit_is_compared() -> None:
    spec = ReportSpec(chip_id=bytes(64))
    vcek = MILAN.endorsement(tcb=spec.reported_tcb, chip_id=bytes(range(64)))
    with pytest.raises(ChainInvalid, match="hwid"):
        verify(signed(spec, vcek), roots=MILAN.roots(), now=NOW, vcek=vcek.der)


def test_report_cpuid_naming_another_product_is_rejected() -> None:
    raw, vcek = _synthetic(ReportSpec(cpuid=(0x19, 0x11, 0x01)))
    with pytest.raises(ChainInvalid, match="CPUID names Genoa"):
        verify(raw, roots=MILAN.roots(), now=NOW, vcek=vcek)
    with pytest.raises(ChainInvalid, match="CPUID names product Genoa, expected Milan"):
        verify(raw, roots=MILAN.roots(), now=NOW, vcek=vcek, product="Milan")


def test_a_vcek_lacking_an_extension_is_rejected() -> None:
    raw, vcek = _synthetic(omit=(kds.OID_BL_SPL,))
    with pytest.raises(ChainInvalid, match="lacks the blSPL extension"):
        verify(raw, roots=MILAN.roots(), now=NOW, vcek=vcek)
    raw, vcek = _synthetic(omit=(kds.OID_HWID,))
    with pytest.raises(ChainInvalid, match="lacks the hwid extension"):
        verify(raw, roots=MILAN.roots(), now=NOW, vcek=vcek)


def test_a_vcek_with_an_unknown_product_name_is_rejected() -> None:
    raw, vcek = _synthetic(product_name="Naples-B0")
    with pytest.raises(ChainInvalid, match="unknown product 'Naples-B0'"):
        verify(raw, roots=MILAN.roots(), now=NOW, vcek=vcek)


def test_a_vcek_with_an_unknown_critical_extension_is_rejected() -> None:
    ext = x509.Extension(
        x509.ObjectIdentifier("1.2.3.4"),
        True,
        x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4"), b"\x05\x00"),
    )
    raw, vcek = _synthetic(extra=(ext,))
    with pytest.raises(ChainInvalid, match=r"unknown critical extension 1\.2\.3\.4"):
        verify(raw, roots=MILAN.roots(), now=NOW, vcek=vcek)


def test_a_vcek_claiming_to_be_a_ca_is_rejected() -> None:
    ext = x509.Extension(
        ExtensionOID.BASIC_CONSTRAINTS, True, x509.BasicConstraints(ca=True, path_length=None)
    )
    raw, vcek = _synthetic(extra=(ext,))
    with pytest.raises(ChainInvalid, match="claims to be a CA"):
        verify(raw, roots=MILAN.roots(), now=NOW, vcek=vcek)


def test_an_expired_synthetic_vcek_is_rejected() -> None:
    raw, vcek = _synthetic(not_after=datetime(2025, 1, 1, tzinfo=UTC))
    with pytest.raises(ChainInvalid, match="VCEK certificate expired"):
        verify(raw, roots=MILAN.roots(), now=NOW, vcek=vcek)


def test_a_version_5_report_verifies_and_carries_its_mitigation_vectors() -> None:
    raw, vcek = _synthetic(ReportSpec(version=5, mit_vectors=(0x3, 0x7)))
    claims = verify(raw, roots=MILAN.roots(), now=NOW, vcek=vcek).verified.claims
    assert (claims["launch_mit_vector"], claims["current_mit_vector"]) == (3, 7)


def test_an_unsigned_report_is_rejected() -> None:
    raw, vcek = _synthetic(ReportSpec(signer_info=7 << 2))
    with pytest.raises(SignatureInvalid, match="unsigned"):
        verify(raw, roots=MILAN.roots(), now=NOW, vcek=vcek)


def test_an_unknown_signature_algorithm_is_rejected() -> None:
    raw, vcek = _synthetic(ReportSpec(signature_algo=2))
    with pytest.raises(SignatureInvalid, match="SIGNATURE_ALGO 2"):
        verify(raw, roots=MILAN.roots(), now=NOW, vcek=vcek)


def test_garbage_certificates_are_chain_invalid() -> None:
    with pytest.raises(ChainInvalid, match="not a DER or PEM"):
        verify(samples.REPORT, roots=ROOTS, now=samples.NOW, vcek=b"not a certificate")


# --- VLEK ------------------------------------------------------------------------------


def _vlek_report(**kwargs: object) -> tuple[bytes, bytes]:
    spec = ReportSpec(signer_info=VLEK_SIGNER)
    vlek = MILAN.endorsement(abi.SigningKey.VLEK, tcb=spec.reported_tcb, **kwargs)  # type: ignore[arg-type]
    return signed(spec, vlek), vlek.der


def test_a_vlek_signed_report_verifies_through_the_asvk() -> None:
    raw, vlek = _vlek_report(csp_id="Example Cloud")
    table = abi.encode_cert_table([(abi.VLEK_GUID, vlek)])
    result = verify(raw + table, roots=MILAN.roots(), now=NOW)
    assert result.signing_key is abi.SigningKey.VLEK
    assert result.endorsement.csp_id == "Example Cloud"
    assert result.verified.claims["csp_id"] == "Example Cloud"
    assert verify(raw, roots=MILAN.roots(), now=NOW, vcek=vlek).signing_key is abi.SigningKey.VLEK


def test_a_vlek_signed_by_the_ask_is_rejected() -> None:
    raw, vlek = _vlek_report(issuer_key=MILAN.ask_key)
    with pytest.raises(
        SignatureInvalid, match="VLEK certificate's signature does not verify with the ASVK"
    ):
        verify(raw, roots=MILAN.roots(), now=NOW, vcek=vlek)


def test_a_vlek_report_with_a_vcek_certificate_is_rejected() -> None:
    spec = ReportSpec(signer_info=VLEK_SIGNER)
    vcek = MILAN.endorsement(tcb=spec.reported_tcb, chip_id=spec.chip_id)
    with pytest.raises(ChainInvalid, match="common name is SEV-VCEK, expected 'SEV-VLEK'"):
        verify(signed(spec, vcek), roots=MILAN.roots(), now=NOW, vcek=vcek.der)


def test_a_vlek_with_a_hwid_is_rejected() -> None:
    raw, vlek = _vlek_report(hwid=bytes(64))
    with pytest.raises(ChainInvalid, match="carries a hwid"):
        verify(raw, roots=MILAN.roots(), now=NOW, vcek=vlek)


def test_a_vlek_is_never_fetched() -> None:
    raw, _vlek = _vlek_report()
    fetcher = FakeFetcher()
    with pytest.raises(CollateralUnavailable, match="VLEK"):
        verify(raw, roots=MILAN.roots(), now=NOW, fetcher=fetcher)
    assert fetcher.urls == []


# --- Turin -----------------------------------------------------------------------------


def test_turin_uses_its_tcb_layout_and_8_byte_hwid() -> None:
    turin = hierarchy(abi.TURIN)
    tcb = abi.compose_tcb(abi.TURIN, fmc=1, bl=2, tee=3, snp=4, microcode=5)
    chip = bytes(range(1, 9)) + bytes(56)
    spec = ReportSpec(
        current_tcb=tcb,
        reported_tcb=tcb,
        committed_tcb=tcb,
        launch_tcb=tcb,
        chip_id=chip,
        cpuid=(0x1A, 0x02, 0x00),
    )
    vcek = turin.endorsement(tcb=tcb, chip_id=chip)
    url = (
        "https://kdsintf.amd.com/vcek/v1/Turin/0102030405060708"
        "?fmcSPL=1&blSPL=2&teeSPL=3&snpSPL=4&ucodeSPL=5"
    )
    fetcher = FakeFetcher({url: vcek.der})
    result = verify(signed(spec, vcek), roots=turin.roots(), now=NOW, fetcher=fetcher)
    assert fetcher.urls == [url]
    assert result.product == "Turin"
    assert result.verified.tcb["reported_tcb"] == {
        "raw": tcb,
        "fmc": 1,
        "bl": 2,
        "tee": 3,
        "snp": 4,
        "microcode": 5,
    }
    other = turin.endorsement(
        tcb=abi.compose_tcb(abi.TURIN, fmc=2, bl=2, tee=3, snp=4, microcode=5), chip_id=chip
    )
    with pytest.raises(ChainInvalid, match="fmcSPL is 2"):
        verify(signed(spec, other), roots=turin.roots(), now=NOW, vcek=other.der)
    not_turin_chip = spec.replace(chip_id=bytes(range(1, 65)))
    with pytest.raises(MalformedEvidence, match="CHIP_ID bytes 8-63"):
        verify(signed(not_turin_chip, vcek), roots=turin.roots(), now=NOW, fetcher=fetcher)


def test_kds_vcek_url() -> None:
    tcb = abi.compose_tcb(abi.GENOA, bl=7, tee=0, snp=21, microcode=72)
    assert kds.vcek_url("Genoa", bytes([0xAB]) * 64, tcb) == (
        "https://kdsintf.amd.com/vcek/v1/Genoa/"
        + "ab" * 64
        + "?blSPL=7&teeSPL=0&snpSPL=21&ucodeSPL=72"
    )


def test_every_error_is_an_attestation_error() -> None:
    for error in (MalformedEvidence, SignatureInvalid, ChainInvalid, CollateralUnavailable):
        assert issubclass(error, AttestationError)
