"""TDX revocation outcomes: the PCK and root CA CRLs come with collateral (the
TDX core applies them, tests/attestation/tdx/test_verify_signer.py); without
collateral, a policy that demands the check refuses, and the deployment's
setting decides otherwise (open: noted; closed: refused)."""

from __future__ import annotations

import json

import pytest

from prism_backends.attestation.appraisal import Anchors, Verdict, appraise
from prism_backends.attestation.snp.crl import RevocationChecks
from tests.attestation.tdx import signer


@pytest.fixture(scope="module")
def pki() -> signer.Pki:
    return signer.make_pki()


def verdict_of(pki: signer.Pki, check_crl: bool, checks: RevocationChecks | None = None) -> Verdict:
    policy = json.dumps({"root_of_trust": {"check_crl": check_crl}}).encode()
    return appraise(
        signer.sign_quote(pki),
        anchors=Anchors(snp_roots={}, tdx_roots=[pki.root.cert]),
        now=signer.NOW,
        policy=policy,
        revocation=checks,
    )


def test_a_policy_demanding_crls_without_collateral_is_refused(pki: signer.Pki) -> None:
    verdict = verdict_of(pki, check_crl=True)
    assert not verdict.verified
    assert "no TDX collateral" in verdict.reason


@pytest.mark.parametrize(("mode", "verified"), [("open", True), ("closed", False)])
def test_the_deployment_setting_decides_without_the_policy(
    pki: signer.Pki, mode: str, verified: bool
) -> None:
    checks = RevocationChecks(always=True, when_unavailable=mode)  # type: ignore[arg-type]
    verdict = verdict_of(pki, check_crl=False, checks=checks)
    assert verdict.verified is verified, verdict.reason
    if verified:
        assert verdict.evidence is not None
        assert verdict.evidence.claims["crl"].startswith("unavailable: ")


def test_without_either_nothing_is_demanded(pki: signer.Pki) -> None:
    verdict = verdict_of(pki, check_crl=False)
    assert verdict.verified
    assert verdict.evidence is not None and verdict.evidence.claims["crl"] == "not checked"
