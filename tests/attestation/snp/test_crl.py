"""AMD's CRL applied to SEV-SNP chains, with a generated ARK/ASK and CRLs the
test ARK signs: a revoked ASK refused, a stale CRL fetched again, a CRL that
cannot be had refusing or noted as configured, and CRLs kept until their next
update."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from prism_backends.attestation.appraisal import Anchors, Verdict, appraise
from prism_backends.attestation.common import CollateralUnavailable
from prism_backends.attestation.snp import abi
from prism_backends.attestation.snp.crl import KDS_CRL_URL, RevocationChecks
from tests.attestation.snp import signer
from tests.attestation.snp.signer import Endorsement, Hierarchy, ReportSpec

MILAN = signer.hierarchy(abi.MILAN)
URL = KDS_CRL_URL.format(kind="vcek", product="Milan")
NOW = signer.NOW
PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)


def make_crl(
    hierarchy: Hierarchy = MILAN,
    *,
    revoked: list[int] = (),  # type: ignore[assignment]
    next_update: datetime = NOW + timedelta(days=7),
    key: rsa.RSAPrivateKey | None = None,
) -> bytes:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(hierarchy.ark.subject)
        .last_update(NOW - timedelta(days=1))
        .next_update(next_update)
    )
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(NOW - timedelta(hours=1))
            .build()
        )
    from cryptography.hazmat.primitives.serialization import Encoding

    crl = builder.sign(key or hierarchy.ark_key, hashes.SHA384(), rsa_padding=PSS)
    return crl.public_bytes(Encoding.DER)


class Fetcher:
    """KDS as far as CRLs go: ``get`` may answer from a (stale) cache, ``refresh`` never does."""

    def __init__(self, cached: bytes | None, fresh: bytes | None = None) -> None:
        self.cached, self.fresh = cached, fresh
        self.gets: list[str] = []
        self.refreshes: list[str] = []

    def get(self, url: str) -> bytes:
        self.gets.append(url)
        if self.cached is None:
            raise CollateralUnavailable(f"cannot fetch {url}: offline")
        return self.cached

    def refresh(self, url: str) -> bytes:
        self.refreshes.append(url)
        if self.fresh is None:
            raise CollateralUnavailable(f"cannot fetch {url}: offline")
        return self.fresh


@pytest.fixture(scope="module")
def vcek() -> Endorsement:
    return MILAN.endorsement(tcb=ReportSpec().reported_tcb, chip_id=ReportSpec().chip_id)


def policy(check_crl: bool) -> bytes:
    return json.dumps(
        {
            "policy": {"policy": ReportSpec().policy},
            "root_of_trust": {"product_line": "Milan", "check_crl": check_crl},
        }
    ).encode()


def verdict_of(
    vcek: Endorsement,
    fetcher: Fetcher | None,
    *,
    check_crl: bool = True,
    checks: RevocationChecks | None = None,
) -> Verdict:
    return appraise(
        signer.signed(ReportSpec(), vcek),
        anchors=Anchors(snp_roots=MILAN.roots(), tdx_roots=[]),
        now=NOW,
        policy=policy(check_crl),
        endorsement=vcek.der,
        fetcher=fetcher,
        revocation=checks,
    )


def test_a_current_crl_that_revokes_nothing_of_ours_verifies(vcek: Endorsement) -> None:
    fetcher = Fetcher(make_crl(revoked=[MILAN.ask.serial_number + 1]))
    verdict = verdict_of(vcek, fetcher)
    assert verdict.verified, verdict.reason
    assert verdict.evidence is not None and verdict.evidence.claims["crl"] == "good"
    assert fetcher.gets == [URL]


def test_a_revoked_ask_is_refused(vcek: Endorsement) -> None:
    verdict = verdict_of(vcek, Fetcher(make_crl(revoked=[MILAN.ask.serial_number])))
    assert not verdict.verified
    assert "ASK" in verdict.reason and "revoked" in verdict.reason


def test_a_crl_another_key_signed_is_refused(vcek: Endorsement) -> None:
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    verdict = verdict_of(vcek, Fetcher(make_crl(key=impostor)))
    assert not verdict.verified
    assert "CRL's signature does not verify" in verdict.reason


def test_a_stale_crl_is_fetched_again(vcek: Endorsement) -> None:
    stale = make_crl(next_update=NOW - timedelta(hours=1))
    fetcher = Fetcher(stale, fresh=make_crl())
    assert verdict_of(vcek, fetcher).verified
    assert fetcher.refreshes == [URL]


def test_a_crl_still_stale_when_fetched_again_is_unavailable(vcek: Endorsement) -> None:
    stale = make_crl(next_update=NOW - timedelta(hours=1))
    verdict = verdict_of(vcek, Fetcher(stale, fresh=stale))
    assert not verdict.verified
    assert "stale" in verdict.reason


def test_crls_are_kept_until_their_next_update(vcek: Endorsement) -> None:
    checks = RevocationChecks()
    fetcher = Fetcher(make_crl())
    assert verdict_of(vcek, fetcher, checks=checks).verified
    assert verdict_of(vcek, fetcher, checks=checks).verified
    assert fetcher.gets == [URL]


def test_an_unavailable_crl_refuses_when_the_policy_demands_the_check(vcek: Endorsement) -> None:
    for fetcher in (None, Fetcher(None)):
        verdict = verdict_of(vcek, fetcher, checks=RevocationChecks(when_unavailable="open"))
        assert not verdict.verified
        assert "CRL" in verdict.reason


@pytest.mark.parametrize(("mode", "verified"), [("open", True), ("closed", False)])
def test_without_the_policy_an_unavailable_crl_is_open_or_closed_as_configured(
    vcek: Endorsement, mode: str, verified: bool
) -> None:
    checks = RevocationChecks(always=True, when_unavailable=mode)  # type: ignore[arg-type]
    verdict = verdict_of(vcek, Fetcher(None), check_crl=False, checks=checks)
    assert verdict.verified is verified, verdict.reason
    if verified:
        assert verdict.evidence is not None
        assert verdict.evidence.claims["crl"].startswith("unavailable: ")


def test_without_the_policy_or_the_setting_no_crl_is_fetched(vcek: Endorsement) -> None:
    fetcher = Fetcher(None)
    verdict = verdict_of(vcek, fetcher, check_crl=False)
    assert verdict.verified
    assert verdict.evidence is not None and verdict.evidence.claims["crl"] == "not checked"
    assert fetcher.gets == []
