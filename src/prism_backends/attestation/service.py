"""Evidence from agents: appraise it, then record the verdict and issue a token.

Runs on the agents endpoint (in a thread: verification is CPU work and the
store is synchronous). Every verdict is recorded: accepted evidence gets a
token; refused evidence gets its reason on the CVM, an event, and a count.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.orm import Session, sessionmaker

from prism_backends.agents import repository as agents_repository
from prism_backends.agents.sealing import Sealer
from prism_backends.attestation import keys, repository, tokens
from prism_backends.attestation.appraisal import Anchors, Verdict, appraise
from prism_backends.attestation.common import Fetcher
from prism_backends.attestation.maa import RemoteJwks, jwks_keys
from prism_backends.attestation.pinning import pinned_policy
from prism_backends.attestation.snp.crl import RevocationChecks
from prism_backends.db.base import utcnow
from prism_backends.db.engine import unit_of_work
from prism_backends.observability.evidence import count_verdict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AttestationSettings:
    issuer: str
    token_lifetime: timedelta
    key_rotation: timedelta
    trust_on_first_use: bool
    crl: str = "policy"  # policy | open | closed: see Settings.attestation_crl
    evidence_max_bytes: int = 262_144


class Appraiser:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        anchors: Anchors,
        sealer: Sealer,
        settings: AttestationSettings,
        fetcher: Fetcher | None = None,
        azure_jwks: dict[str, Any] | None = None,
        azure_jwks_url: str | None = None,
        corim_keys: Mapping[str, tuple[ec.EllipticCurvePublicKey, ...]] | None = None,
    ) -> None:
        self._sessions = sessions
        self._anchors = anchors
        self._sealer = sealer
        self._settings = settings
        self._fetcher = fetcher
        self._azure_keys = jwks_keys(azure_jwks) if azure_jwks else {}
        self._azure_jwks = RemoteJwks(azure_jwks_url) if azure_jwks_url else None
        self._corim_keys = dict(corim_keys or {})  # provider -> keys for signed CoRIMs
        # One cache for the process: AMD's CRLs are kept until their next update.
        self._revocation = RevocationChecks(
            always=settings.crl != "policy",
            when_unavailable="closed" if settings.crl == "closed" else "open",
        )

    def evidence(self, cvm_id: str, raw: bytes, *, serial: str | None = None) -> Verdict | None:
        """Appraise an agent's evidence and record the verdict. It must be bound
        to the certificate with ``serial`` (the one its stream presented; by
        default the CVM's newest valid one). None when the CVM is gone."""
        now = utcnow()
        with unit_of_work(self._sessions) as session:
            context = repository.evidence_context(session, cvm_id, serial=serial, now=now)
        if context is None:
            return None
        pinning = context.policy is None and self._settings.trust_on_first_use
        verdict = self._appraise(raw, context, now)
        if verdict.verified and context.policy is None and not pinning:
            verdict = Verdict(
                verdict.platform,
                False,
                "this CVM has no attestation policy: configure reference values for its "
                "provider and platform, or enable trust on first use",
                evidence=verdict.evidence,
            )
        with unit_of_work(self._sessions) as session:
            if verdict.verified and verdict.evidence is not None:
                pinned = pinned_policy(verdict.evidence) if pinning else None
                claims = tokens.claims_for(
                    verdict.evidence,
                    tokens.TokenSubject(cvm_id, context.domain_id, pinned or context.policy),
                    issuer=self._settings.issuer,
                    now=now,
                    lifetime=self._settings.token_lifetime,
                )
                key = keys.current_key(
                    session,
                    self._sealer,
                    keys.KeyPolicy(self._settings.key_rotation, self._settings.token_lifetime),
                    now,
                )
                repository.record_accepted(
                    session,
                    cvm_id,
                    evidence=raw,
                    token=tokens.sign(claims, key),
                    now=now,
                    pinned_policy=pinned,
                )
                self._event(session, cvm_id, "attestation_verified", verdict, now)
            else:
                repository.record_refused(session, cvm_id, reason=verdict.reason, now=now)
                self._event(
                    session, cvm_id, "attestation_failed", verdict, now, evidence=_digest(raw)
                )
        log.info("CVM %s evidence: %s %s", cvm_id, verdict.verified, verdict.reason)
        count_verdict(verdict.platform, verdict.verified, verdict.reason)
        return verdict

    def _appraise(self, raw: bytes, context: repository.EvidenceContext, now: Any) -> Verdict:
        cap = self._settings.evidence_max_bytes
        if len(raw) > cap:
            return Verdict(
                "",
                False,
                f"the evidence is {len(raw)} bytes, more than the {cap} that a report with "
                "its certificates, a quote or a vTPM attestation needs (evidence_max_bytes)",
            )
        cert_pem = context.cert_pem.encode()
        return appraise(
            raw,
            anchors=self._anchors,
            now=now,
            policy=context.policy,
            expected_report_data=hashlib.sha512(cert_pem).digest(),
            # Cocos' agent puts the vTPM nonce (SHA-256 of its certificate PEM) in
            # an EAT's eat_nonce, or the report data when it has no vTPM.
            expected_nonces=(hashlib.sha256(cert_pem).digest(), hashlib.sha512(cert_pem).digest()),
            fetcher=self._fetcher,
            revocation=self._revocation,
            corim_keys=self._corim_keys.get(context.provider, ()),
        )

    def azure_token(self, cvm_id: str, token: str) -> str | None:
        """Validate an Azure Attestation (MAA) token against its issuer's keys and
        keep it; the reason when refused, None when accepted."""
        now = utcnow()
        reason = self._azure_refusal(token)
        with unit_of_work(self._sessions) as session:
            if reason is None:
                agents_repository.store_token(session, cvm_id, token)
                agents_repository.add_events(
                    session,
                    [
                        _event_row(
                            cvm_id, "azure_token", "Azure attestation token validated", {}, now
                        )
                    ],
                )
            else:
                repository.record_refused(session, cvm_id, reason=reason, now=now)
                agents_repository.add_events(
                    session,
                    [
                        _event_row(
                            cvm_id, "attestation_failed", reason, {"evidence": "azure_token"}, now
                        )
                    ],
                )
        return reason

    def _azure_refusal(self, token: str) -> str | None:
        if len(token) > self._settings.evidence_max_bytes:
            return (
                f"the Azure attestation token is {len(token)} bytes, more than the "
                f"{self._settings.evidence_max_bytes} accepted (evidence_max_bytes)"
            )
        if not self._azure_keys and self._azure_jwks is None:
            return (
                "no Azure Attestation keys are configured "
                "(azure_attestation_jwks_file or azure_attestation_jwks_url)"
            )
        try:
            header = jwt.get_unverified_header(token)
            key = self._azure_keys.get(header.get("kid"))
            if key is None and self._azure_jwks is not None:
                key = self._fetched_azure_key(token)
            if key is None:
                return "the Azure attestation token was not signed by a trusted key"
            jwt.decode(token, key, algorithms=["RS256"], options={"verify_aud": False})
        except jwt.PyJWTError as exc:
            return f"the Azure attestation token is not valid: {exc}"
        return None

    def _fetched_azure_key(self, token: str) -> Any:
        """The token's key from the configured JWKS URL; None when it has no such key."""
        assert self._azure_jwks is not None
        kid = jwt.get_unverified_header(token).get("kid")
        try:
            return self._azure_jwks.key(kid)
        except OSError as exc:
            log.warning("the Azure Attestation JWKS could not be fetched: %s", exc)
            return None

    def _event(
        self,
        session: Session,
        cvm_id: str,
        kind: str,
        verdict: Verdict,
        now: Any,
        *,
        evidence: dict[str, Any] | None = None,
    ) -> None:
        details = verdict.as_json() | (evidence or {})
        message = "evidence verified" if verdict.verified else verdict.reason
        agents_repository.add_events(session, [_event_row(cvm_id, kind, message, details, now)])


def _digest(raw: bytes) -> dict[str, Any]:
    """What is kept of refused evidence: enough to recognise it, not the bytes."""
    return {"evidence_sha256": hashlib.sha256(raw).hexdigest(), "evidence_bytes": len(raw)}


def _event_row(
    cvm_id: str, kind: str, message: str, details: dict[str, Any], now: Any
) -> dict[str, object]:
    details_json = json.dumps(details, default=str)
    return {
        "cvm_id": cvm_id,
        "kind": kind,
        "occurred_at": now,
        "received_at": now,
        "level": "info" if kind != "attestation_failed" else "error",
        "message": message,
        "computation_id": "",
        "details": details_json,
        "size": len(message.encode()) + len(details_json.encode()),
    }
