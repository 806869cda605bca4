"""SEV-SNP + vTPM evidence (go-tpm-tools' attest.Attestation, as Cocos' agent
sends it), bare or in an EAT: verified when the quotes verify with the
attestation key, the SNP report binds that key and the PCRs match the
policy; each broken link refused, naming the check."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest

from prism_backends.attestation.appraisal import Anchors, Verdict, appraise
from prism_backends.attestation.snp import abi as snp_abi
from prism_backends.attestation.vtpm import verify as vtpm_verify
from prism_backends.attestation.vtpm.attestation_pb2 import Attestation
from tests.attestation import eat_wrap
from tests.attestation.snp import signer as snp_signer
from tests.attestation.snp.signer import Endorsement, ReportSpec
from tests.attestation.vtpm_signer import DEFAULT_PCRS, VtpmEvidence, report_message

CERT_PEM = b"-----BEGIN CERTIFICATE-----\nagent\n-----END CERTIFICATE-----\n"
TEE_NONCE = hashlib.sha512(CERT_PEM).digest()
NONCE = hashlib.sha256(CERT_PEM).digest()
MILAN = snp_signer.hierarchy(snp_abi.MILAN)
SPEC = ReportSpec()


@pytest.fixture(scope="module")
def vcek() -> Endorsement:
    return MILAN.endorsement(tcb=SPEC.reported_tcb, chip_id=SPEC.chip_id)


def evidence(vcek: Endorsement, **wrong: Any) -> bytes:
    return VtpmEvidence(tee_nonce=TEE_NONCE, nonce=NONCE, **wrong).build(vcek)


def policy(pcrs: dict[str, dict[str, str]] | None = None) -> bytes:
    document: dict[str, Any] = {
        "policy": {
            "measurement": base64.b64encode(SPEC.measurement).decode(),
            "policy": SPEC.policy,
        },
        "root_of_trust": {"product_line": "Milan"},
    }
    if pcrs is not None:
        document["pcr_values"] = pcrs
    return json.dumps(document).encode()


def verdict_of(
    raw: bytes, document: bytes | None = None, nonces: tuple[bytes, ...] = (NONCE, TEE_NONCE)
) -> Verdict:
    return appraise(
        raw,
        anchors=Anchors(snp_roots=MILAN.roots(), tdx_roots=[]),
        now=snp_signer.NOW,
        policy=document if document is not None else policy(),
        expected_report_data=TEE_NONCE,
        expected_nonces=nonces,
    )


PINNED = {
    "sha256": {"15": DEFAULT_PCRS["sha256"][15].hex()},
    "sha384": {"7": DEFAULT_PCRS["sha384"][7].hex()},
}


def test_bare_vtpm_evidence_verifies_and_names_the_pcrs_it_checked(vcek: Endorsement) -> None:
    verdict = verdict_of(evidence(vcek), policy(PINNED))
    assert verdict.verified, verdict.reason
    assert verdict.evidence is not None
    vtpm = verdict.evidence.claims["vtpm"]
    assert vtpm["pcrs_checked"] == ["sha256:15", "sha384:7"]
    assert vtpm["pcrs"]["sha256"]["15"] == DEFAULT_PCRS["sha256"][15].hex()
    assert vtpm["nonce"] == NONCE.hex()


@pytest.mark.parametrize("wrap", [eat_wrap.cbor_eat, eat_wrap.jwt_eat], ids=["cbor", "jwt"])
def test_vtpm_evidence_in_an_eat_verifies(vcek: Endorsement, wrap: Any) -> None:
    raw = evidence(vcek)
    token = wrap(raw, NONCE, "SNP-vTPM", snp_report=vtpm_verify.snp_evidence(_parsed(raw)))
    verdict = verdict_of(token)
    assert verdict.verified, verdict.reason
    assert verdict.as_json()["eat"]["claims"]["platform_type"] == "SNP-vTPM"


def test_an_eat_claim_that_lies_about_the_snp_report_inside_is_named(vcek: Endorsement) -> None:
    raw = evidence(vcek)
    token = eat_wrap.cbor_eat(
        raw, NONCE, "SNP-vTPM", lies={"x-cocos-sevsnp.measurement": bytes(48)},
        snp_report=vtpm_verify.snp_evidence(_parsed(raw)),
    )  # fmt: skip
    verdict = verdict_of(token)
    assert not verdict.verified
    assert "x-cocos-sevsnp.measurement" in verdict.reason


@pytest.mark.parametrize(
    ("wrong", "named"),
    [
        ({"report_byte_flipped": True}, "signature"),
        ({"report_binds_another_key": True}, "report_data (binds the attestation key)"),
        ({"quote_signed_by_another_key": True}, "TPM quote's signature"),
        ({"sent_pcrs_wrong": True}, "PCR digest differs"),
    ],
)
def test_each_broken_link_is_refused_naming_it(
    vcek: Endorsement, wrong: dict[str, bool], named: str
) -> None:
    verdict = verdict_of(evidence(vcek, **wrong))
    assert not verdict.verified
    assert named in verdict.reason


def test_a_quote_for_another_nonce_is_refused(vcek: Endorsement) -> None:
    raw = VtpmEvidence(tee_nonce=TEE_NONCE, nonce=bytes(32)).build(vcek)
    verdict = verdict_of(raw)
    assert not verdict.verified
    assert [f.field for f in verdict.failures] == ["vtpm.nonce"]


def test_a_pcr_that_differs_from_the_policy_is_refused_naming_it(vcek: Endorsement) -> None:
    pinned = {"sha256": {"15": "00" * 32, "0": DEFAULT_PCRS["sha256"][0].hex()}}
    verdict = verdict_of(evidence(vcek), policy(pinned))
    assert not verdict.verified
    assert [f.field for f in verdict.failures] == ["pcr_values.sha256.15"]


def test_a_pcr_the_policy_names_but_no_quote_covers_is_refused(vcek: Endorsement) -> None:
    verdict = verdict_of(evidence(vcek), policy({"sha256": {"9": "11" * 32}}))
    assert not verdict.verified
    assert verdict.failures[0].actual == "(not quoted)"


@pytest.mark.parametrize(
    ("pcrs", "named"),
    [
        ({"md5": {}}, "pcr_values.md5"),
        ({"sha256": {"x": "00"}}, "pcr_values.sha256.x"),
        ({"sha256": {"15": "00"}}, "pcr_values.sha256.15: expected 32 bytes"),
    ],
)
def test_a_bad_pcr_policy_is_named(vcek: Endorsement, pcrs: dict[str, Any], named: str) -> None:
    verdict = verdict_of(evidence(vcek), policy(pcrs))
    assert not verdict.verified
    assert named in verdict.reason


@pytest.mark.parametrize("version", [2, 3, 5])
def test_the_report_rebuilt_from_its_fields_is_the_report_signed(
    vcek: Endorsement, version: int
) -> None:
    raw = snp_signer.signed(SPEC.replace(version=version, mit_vectors=(3, 1)), vcek)
    assert vtpm_verify.report_bytes(report_message(raw)) == raw


def test_junk_is_not_taken_for_a_vtpm_attestation() -> None:
    assert vtpm_verify.parse(b"hello") is None
    assert vtpm_verify.parse(Attestation(ak_pub=b"x").SerializeToString()) is None


def _parsed(raw: bytes) -> Attestation:
    parsed = vtpm_verify.parse(raw)
    assert parsed is not None
    return parsed
