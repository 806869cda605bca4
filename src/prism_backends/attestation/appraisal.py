"""Appraising evidence: verify it, check it is bound to the agent, check it
against the CVM's policy. Pure: anchors, policy, time and fetcher are given.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from prism_backends.attestation import corim, eat
from prism_backends.attestation.common import (
    AttestationError,
    CheckFailure,
    CollateralUnavailable,
    Fetcher,
    PolicyError,
    Verified,
)
from prism_backends.attestation.snp import abi as snp_abi
from prism_backends.attestation.snp import crl as snp_crl
from prism_backends.attestation.snp import policy as snp_policy
from prism_backends.attestation.snp import validate as snp_validate
from prism_backends.attestation.snp import verify as snp_verify
from prism_backends.attestation.snp.abi import REPORT_SIZE
from prism_backends.attestation.snp.trust import ProductRoots
from prism_backends.attestation.tdx import policy as tdx_policy
from prism_backends.attestation.tdx import validate as tdx_validate
from prism_backends.attestation.tdx import verify as tdx_verify
from prism_backends.attestation.vtpm import policy as vtpm_policy
from prism_backends.attestation.vtpm import verify as vtpm_verify

SEV_SNP, TDX = "sev-snp", "tdx"
TDX_TEE_TYPE = 0x81


@dataclass(frozen=True)
class Anchors:
    """The roots evidence must chain to."""

    snp_roots: Mapping[str, ProductRoots]
    tdx_roots: Sequence[x509.Certificate]


@dataclass(frozen=True)
class Verdict:
    platform: str  # sev-snp, tdx, or "" when not recognised
    verified: bool
    reason: str = ""
    failures: tuple[CheckFailure, ...] = ()
    evidence: Verified | None = None  # set once the signatures verified
    details: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {"platform": self.platform, "verified": self.verified}
        if self.evidence is not None:
            result["report_data"] = self.evidence.report_data.hex()
            result["measurement"] = self.evidence.measurement
            result["tcb"] = self.evidence.tcb
            result["claims"] = self.evidence.claims
        if not self.verified:
            result["reason"] = self.reason
        if "eat" in self.details:
            result["eat"] = self.details["eat"]
        if self.failures:
            result["failures"] = [
                {"field": f.field, "expected": f.expected, "actual": f.actual}
                for f in self.failures
            ]
        return result


def detect_platform(raw: bytes) -> str:
    """``sev-snp`` for an SNP report (with or without its certificate table),
    ``tdx`` for a TDX quote (v4, v5), "" otherwise."""
    if len(raw) >= 8:
        version, key_type, tee_type = struct.unpack_from("<HHI", raw, 0)
        # An SNP report's bytes 2-3 are zero; a quote's attestation key type is 2 or 3.
        if version in (4, 5) and key_type in (2, 3) and tee_type == TDX_TEE_TYPE:
            return TDX
    if len(raw) >= REPORT_SIZE and 2 <= int.from_bytes(raw[0:4], "little") <= 5:
        return SEV_SNP
    return ""


@dataclass(frozen=True)
class _Given:
    """What every step of an appraisal is given besides the evidence."""

    anchors: Anchors
    now: datetime
    policy: bytes | None
    endorsement: bytes | None
    fetcher: Fetcher | None
    revocation: snp_crl.RevocationChecks
    corim_keys: tuple[ec.EllipticCurvePublicKey, ...] = ()

    def policy_for(self, platform: str) -> bytes | None:
        """The JSON policy to apply: a CoRIM's reference values as such JSON."""
        if self.policy is None or not corim.is_corim(self.policy):
            return self.policy
        return corim.to_policy_json(corim.parse(self.policy, platform, self.corim_keys))


def appraise(
    raw: bytes,
    *,
    anchors: Anchors,
    now: datetime,
    policy: bytes | None = None,
    expected_report_data: bytes | None = None,
    expected_nonces: Sequence[bytes] = (),
    endorsement: bytes | None = None,
    fetcher: Fetcher | None = None,
    revocation: snp_crl.RevocationChecks | None = None,
    corim_keys: Sequence[ec.EllipticCurvePublicKey] = (),
) -> Verdict:
    """The verdict on ``raw`` evidence: a report, a quote, an SEV-SNP + vTPM
    attestation, or an EAT wrapping one. Verified only when its signatures and
    chain verify, ``report_data`` equals ``expected_report_data`` (when
    given), every check of ``policy`` (go-sev-guest ``check.Config`` or
    go-tdx-guest ``checkconfig.Config`` JSON, with Cocos' ``pcr_values``, when
    given) passes, AMD's CRL (when ``revocation`` or the policy asks) does not
    revoke the chain, and an EAT's claims agree with its report and its nonce
    is one of ``expected_nonces`` (when given)."""
    given = _Given(
        anchors,
        now,
        policy,
        endorsement,
        fetcher,
        revocation or snp_crl.RevocationChecks(),
        tuple(corim_keys),
    )
    try:
        token = eat.parse(raw)
    except AttestationError as exc:
        return Verdict("", False, exc.reason)
    if token is None:
        return _appraise_evidence(raw, given, expected_report_data, expected_nonces)
    if token.platform_type in ("SNP-vTPM", "vTPM") and not detect_platform(token.raw_report):
        verdict = _appraise_vtpm(token.raw_report, given, expected_report_data, expected_nonces)
    else:
        verdict = _appraise_evidence(token.raw_report, given, expected_report_data, expected_nonces)
    return _with_eat(verdict, token, expected_nonces)


def _appraise_evidence(
    raw: bytes, given: _Given, expected_report_data: bytes | None, nonces: Sequence[bytes]
) -> Verdict:
    if not detect_platform(raw) and vtpm_verify.parse(raw) is not None:
        return _appraise_vtpm(raw, given, expected_report_data, nonces)
    return _appraise_report(raw, given, expected_report_data)


def _with_eat(verdict: Verdict, token: eat.Eat, nonces: Sequence[bytes]) -> Verdict:
    """The report's verdict, refused as well where the token's claims lie."""
    details = {**verdict.details, "eat": {"form": token.form, "claims": token.summary()}}
    if verdict.evidence is None:  # the report itself did not verify: that is the reason
        return replace(verdict, details=details)
    report = verdict.details.get("snp_report")  # the report inside a vTPM attestation
    contradicted = eat.contradictions(token, verdict.platform, nonces, report)
    failures = [*verdict.failures, *contradicted]
    if not failures:
        return replace(verdict, details=details)
    reason = "; ".join(str(failure) for failure in failures)
    return Verdict(verdict.platform, False, reason, tuple(failures), verdict.evidence, details)


def _appraise_vtpm(
    raw: bytes, given: _Given, expected_report_data: bytes | None, nonces: Sequence[bytes]
) -> Verdict:
    """SEV-SNP + vTPM evidence: the quotes, the SNP report that binds their key
    (its report data is SHA3-512 of the expected report data and the key),
    and the policy's PCR values."""
    attestation = vtpm_verify.parse(raw)
    if attestation is None:
        return Verdict("", False, "not a vTPM attestation (go-tpm-tools attest.Attestation)")
    try:
        json_policy = given.policy_for(SEV_SNP)
        pcr_policy = vtpm_policy.parse_pcr_values(json_policy)
        quotes = vtpm_verify.verify_quotes(attestation)
        snp_raw = vtpm_verify.snp_evidence(attestation)
    except PolicyError as exc:
        return Verdict(SEV_SNP, False, f"the attestation policy is not valid: {exc}")
    except AttestationError as exc:
        return Verdict(SEV_SNP, False, exc.reason)
    bound = (
        vtpm_verify.binding(expected_report_data, quotes.ak_pub)
        if expected_report_data is not None
        else None
    )
    verdict = _appraise_report(snp_raw, given, bound)
    vtpm_claims = {
        "pcrs": {
            bank: {str(i): v.hex() for i, v in sorted(values.items())}
            for bank, values in quotes.pcrs.items()
        },
        "pcrs_checked": vtpm_policy.checked_names(pcr_policy),
        "nonce": quotes.nonce.hex(),
    }
    details = {**verdict.details, "snp_report": snp_raw[:REPORT_SIZE], "vtpm": vtpm_claims}
    if verdict.evidence is None:
        return replace(verdict, details=details)
    failures = list(verdict.failures)
    if failures and failures[0].field == "report_data":
        failures[0] = CheckFailure(
            "report_data (binds the attestation key)", failures[0].expected, failures[0].actual
        )
    if nonces and quotes.nonce not in nonces:
        wanted = " or ".join(n.hex() for n in nonces)
        failures.append(CheckFailure("vtpm.nonce", wanted, quotes.nonce.hex() or "(none)"))
    failures += vtpm_policy.check_pcrs(pcr_policy, quotes.pcrs)
    evidence = replace(verdict.evidence, claims={**verdict.evidence.claims, "vtpm": vtpm_claims})
    if failures:
        reason = "; ".join(str(failure) for failure in failures)
        return Verdict(SEV_SNP, False, reason, tuple(failures), evidence, details)
    return Verdict(SEV_SNP, True, evidence=evidence, details=details)


def _appraise_report(raw: bytes, given: _Given, expected_report_data: bytes | None) -> Verdict:
    platform = detect_platform(raw)
    if not platform:
        return Verdict("", False, "not an SEV-SNP report nor a TDX quote (v4 or v5)")
    try:
        if platform == SEV_SNP:
            evidence, failures = _snp(raw, given)
        else:
            evidence, failures = _tdx(raw, given)
    except PolicyError as exc:
        return Verdict(platform, False, f"the attestation policy is not valid: {exc}")
    except AttestationError as exc:
        return Verdict(platform, False, exc.reason)
    if expected_report_data is not None and evidence.report_data != expected_report_data:
        failures.insert(
            0,
            CheckFailure("report_data", expected_report_data.hex(), evidence.report_data.hex()),
        )
    if failures:
        reason = "; ".join(str(failure) for failure in failures)
        return Verdict(platform, False, reason, tuple(failures), evidence)
    return Verdict(platform, True, evidence=evidence)


def _snp(raw: bytes, given: _Given) -> tuple[Verified, list[CheckFailure]]:
    policy = given.policy_for(SEV_SNP)
    config = snp_policy.parse_config(policy) if policy is not None else None
    product = None
    if config is not None:
        product = config.root_of_trust.product_line or None
    verified = snp_verify.verify(
        raw,
        roots=given.anchors.snp_roots,
        now=given.now,
        vcek=given.endorsement,
        fetcher=given.fetcher,
        product=product,
    )
    failures = snp_validate.validate(verified, config.policy) if config is not None else []
    demanded = config is not None and config.root_of_trust.check_crl
    crl_state = _snp_revocation(verified, demanded, given)
    summary = replace(verified.verified, claims={**verified.verified.claims, "crl": crl_state})
    return summary, failures


def _snp_revocation(verified: snp_verify.VerifiedSnp, demanded: bool, given: _Given) -> str:
    """Apply AMD's CRL when the policy demands it or the deployment always does;
    raises for a revoked ASK/ASVK, and for an unavailable CRL when closed. The
    outcome for the verdict: ``good``, ``not checked`` or ``unavailable: ...``."""
    checks = given.revocation
    if not (demanded or checks.always) or verified.ark is None or verified.intermediate is None:
        return "not checked"
    vlek = verified.signing_key == snp_abi.SigningKey.VLEK
    url = snp_crl.crl_url(verified.intermediate, verified.product, vlek)
    try:
        crl = checks.cache.current(url, given.fetcher, given.now)
    except snp_crl.CrlUnavailable as exc:
        if demanded or checks.when_unavailable == "closed":
            raise
        return f"unavailable: {exc.reason}"
    snp_crl.check(
        crl, ark=verified.ark, intermediate=verified.intermediate, role="ASVK" if vlek else "ASK"
    )
    return "good"


def _tdx(raw: bytes, given: _Given) -> tuple[Verified, list[CheckFailure]]:
    policy = given.policy_for(TDX)
    config = tdx_policy.parse_config(policy) if policy is not None else None
    verified = tdx_verify.verify(
        raw, trusted_roots=list(given.anchors.tdx_roots), now=given.now, fetcher=given.fetcher
    )
    failures = tdx_validate.validate(verified.quote, config.policy) if config is not None else []
    demanded = config is not None and (
        config.root_of_trust.check_crl or config.root_of_trust.get_collateral
    )
    crl_state = _tdx_revocation(verified, demanded, given)
    summary = replace(verified.verified, claims={**verified.verified.claims, "crl": crl_state})
    return summary, failures


def _tdx_revocation(verified: tdx_verify.VerifiedTdx, demanded: bool, given: _Given) -> str:
    """TDX collateral carries the PCK and root CA CRLs, applied by the TDX core
    whenever it could be had. Without it: refused when the policy demands the
    check (``check_crl``/``get_collateral``) or the deployment is closed, noted
    when open."""
    if verified.tcb is not None:
        return "good"
    checks = given.revocation
    if not (demanded or checks.always):
        return "not checked"
    why = "no TDX collateral (with the PCK and root CA CRLs) could be had: fetching is off"
    if demanded or checks.when_unavailable == "closed":
        raise CollateralUnavailable(why)
    return f"unavailable: {why}"
