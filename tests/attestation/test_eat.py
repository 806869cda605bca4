"""Evidence wrapped in an EAT as Cocos' agent wraps it (CBOR COSE_Sign1 or
JWT): the report inside is verified as itself, and the token is refused where
its claims disagree with that report, its nonce is not the agent's, or it is
not a readable token; each refusal names the check."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import cbor2
import pytest

from prism_backends.attestation import eat
from prism_backends.attestation.appraisal import Anchors, Verdict, appraise
from prism_backends.attestation.snp import abi as snp_abi
from tests.attestation import eat_wrap
from tests.attestation.snp import signer as snp_signer
from tests.attestation.snp.signer import Endorsement, ReportSpec
from tests.attestation.tdx import signer as tdx_signer
from tests.attestation.tdx.signer import Pki, QuoteFields

CERT_PEM = b"-----BEGIN CERTIFICATE-----\nagent\n-----END CERTIFICATE-----\n"
REPORT_DATA = hashlib.sha512(CERT_PEM).digest()
VTPM_NONCE = hashlib.sha256(CERT_PEM).digest()
NONCES = (VTPM_NONCE, REPORT_DATA)
MILAN = snp_signer.hierarchy(snp_abi.MILAN)
SPEC = ReportSpec(report_data=REPORT_DATA)
Wrap = Callable[..., bytes]
WRAPS = [pytest.param(eat_wrap.cbor_eat, id="cbor"), pytest.param(eat_wrap.jwt_eat, id="jwt")]


@pytest.fixture(scope="module")
def vcek() -> Endorsement:
    return MILAN.endorsement(tcb=SPEC.reported_tcb, chip_id=SPEC.chip_id)


@pytest.fixture(scope="module")
def report(vcek: Endorsement) -> bytes:
    return snp_signer.signed(SPEC, vcek)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return tdx_signer.make_pki()


def snp_verdict(token: bytes, vcek: Endorsement) -> Verdict:
    return appraise(
        token,
        anchors=Anchors(snp_roots=MILAN.roots(), tdx_roots=[]),
        now=snp_signer.NOW,
        expected_report_data=REPORT_DATA,
        expected_nonces=NONCES,
        endorsement=vcek.der,
    )


@pytest.mark.parametrize("wrap", WRAPS)
@pytest.mark.parametrize("nonce", [VTPM_NONCE, REPORT_DATA], ids=["vtpm-nonce", "report-data"])
def test_an_snp_eat_verifies_as_its_report_does(
    wrap: Wrap, nonce: bytes, report: bytes, vcek: Endorsement
) -> None:
    verdict = snp_verdict(wrap(report, nonce), vcek)
    assert verdict.verified, verdict.reason
    document = verdict.as_json()
    assert document["eat"]["form"] == ("cbor" if wrap is eat_wrap.cbor_eat else "jwt")
    assert document["eat"]["claims"]["platform_type"] == "SNP"
    assert document["eat"]["claims"]["eat_nonce"] == nonce.hex()
    assert "raw_report" not in document["eat"]["claims"]


@pytest.mark.parametrize("wrap", WRAPS)
def test_one_byte_of_the_raw_report_changed_is_refused_by_its_signature(
    wrap: Wrap, report: bytes, vcek: Endorsement
) -> None:
    changed = bytearray(report)
    changed[0x90] ^= 1  # MEASUREMENT
    verdict = snp_verdict(wrap(bytes(changed), VTPM_NONCE), vcek)
    assert not verdict.verified
    assert "signature" in verdict.reason.lower()


@pytest.mark.parametrize("wrap", WRAPS)
@pytest.mark.parametrize(
    ("lie", "named"),
    [
        ({"x-cocos-sevsnp.measurement": bytes(48)}, "x-cocos-sevsnp.measurement"),
        ({"x-cocos-sevsnp.policy": SPEC.policy ^ (1 << 19)}, "x-cocos-sevsnp.policy"),  # debug
        ({"x-cocos-sevsnp.launch_tcb": 1}, "x-cocos-sevsnp.launch_tcb"),
        ({"measurements": bytes(48)}, "measurements"),
        ({"ueid": bytes(64)}, "ueid"),
        ({"platform_type": "TDX"}, "platform_type"),
    ],
)
def test_a_claim_that_lies_about_the_report_is_refused_naming_it(
    wrap: Wrap, lie: dict[str, Any], named: str, report: bytes, vcek: Endorsement
) -> None:
    verdict = snp_verdict(wrap(report, VTPM_NONCE, lies=lie), vcek)
    assert not verdict.verified
    assert [f.field.removesuffix(" (claimed)") for f in verdict.failures] == [named]
    assert named in verdict.reason


@pytest.mark.parametrize("wrap", WRAPS)
def test_a_wrong_nonce_is_refused(wrap: Wrap, report: bytes, vcek: Endorsement) -> None:
    verdict = snp_verdict(wrap(report, b"someone else's nonce"), vcek)
    assert not verdict.verified
    assert [f.field for f in verdict.failures] == ["eat_nonce"]


def test_the_report_data_is_still_checked_inside_an_eat(vcek: Endorsement) -> None:
    other = snp_signer.signed(SPEC.replace(report_data=bytes(64)), vcek)
    verdict = snp_verdict(eat_wrap.cbor_eat(other, VTPM_NONCE), vcek)
    assert not verdict.verified
    assert [f.field for f in verdict.failures] == ["report_data"]


@pytest.mark.parametrize("wrap", WRAPS)
def test_a_tdx_eat_verifies_and_a_lying_rtmr_is_named(wrap: Wrap, pki: Pki) -> None:
    quote = tdx_signer.sign_quote(pki, QuoteFields(report_data=REPORT_DATA))
    anchors = Anchors(snp_roots={}, tdx_roots=[pki.root.cert])

    def verdict(token: bytes) -> Verdict:
        return appraise(token, anchors=anchors, now=tdx_signer.NOW, expected_nonces=NONCES)

    assert verdict(wrap(quote, REPORT_DATA, "TDX")).verified
    lying = verdict(wrap(quote, REPORT_DATA, "TDX", lies={"x-cocos-tdx.tdx_rtmr0": bytes(48)}))
    assert not lying.verified
    assert [f.field for f in lying.failures] == ["x-cocos-tdx.tdx_rtmr0 (claimed)"]


def test_claims_a_token_leaves_out_are_not_contradictions(report: bytes, vcek: Endorsement) -> None:
    token = eat.parse(eat_wrap.cbor_eat(report, VTPM_NONCE))
    assert token is not None
    claims = dict(token.claims)
    claims["x-cocos-sevsnp"] = {"measurement": claims["x-cocos-sevsnp"]["measurement"]}
    del claims["ueid"]
    assert eat.contradictions(eat.Eat("cbor", claims), "sev-snp", NONCES) == []


def _sign1(payload: object) -> bytes:
    return cbor2.dumps(cbor2.CBORTag(18, [b"", {}, payload, b""]))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(_sign1(None), "payload", id="no-payload"),
        pytest.param(_sign1(b"\xff\xff"), "CBOR", id="bad-claims"),
        pytest.param(_sign1(cbor2.dumps({1: "x"})), "raw_report", id="no-raw-report"),
        pytest.param(_sign1(cbor2.dumps([1])), "map", id="claims-not-a-map"),
        pytest.param(b"\xd2\x84\x40", "CBOR", id="truncated"),
        pytest.param(b"eyJhbGciOiJFUzI1NiJ9.bm90IGpzb24.c2ln", "JWT", id="jwt-not-json"),
    ],
)
def test_an_unreadable_token_is_refused_with_a_reason(raw: bytes, reason: str) -> None:
    verdict = appraise(raw, anchors=Anchors(snp_roots={}, tdx_roots=[]), now=snp_signer.NOW)
    assert not verdict.verified
    assert reason in verdict.reason


def test_vtpm_evidence_that_is_not_an_attestation_is_refused_saying_so() -> None:
    token = eat_wrap.cbor_eat(b"\x0a\x05tpm-attestation-protobuf", VTPM_NONCE, "vTPM")
    verdict = appraise(token, anchors=Anchors(snp_roots={}, tdx_roots=[]), now=snp_signer.NOW)
    assert not verdict.verified
    assert "vTPM attestation" in verdict.reason


def test_bare_reports_are_not_taken_for_tokens(report: bytes, vcek: Endorsement) -> None:
    assert eat.parse(report) is None
    assert snp_verdict(report, vcek).verified
