"""``prism-backends attestation``: verify or show evidence, for people and scripts."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from prism_backends.attestation import appraisal, eat
from prism_backends.attestation.common import AttestationError
from prism_backends.attestation.fetch import CachingHttpFetcher
from prism_backends.attestation.snp.abi import parse_attestation
from prism_backends.attestation.snp.crl import RevocationChecks
from prism_backends.attestation.snp.roots import bundled_roots as snp_roots
from prism_backends.attestation.snp.verify import report_claims, tcb_claims
from prism_backends.attestation.tdx.abi import parse_quote
from prism_backends.attestation.tdx.roots import bundled_roots as tdx_roots
from prism_backends.attestation.vtpm import tpm2
from prism_backends.attestation.vtpm import verify as vtpm_verify

attestation_app = typer.Typer(
    rich_markup_mode=None,
    help="Verify or show SEV-SNP reports, TDX quotes and SEV-SNP + vTPM attestations, "
    "bare or wrapped in an EAT.",
    no_args_is_help=True,
)

EXIT_VERIFIED, EXIT_NOT_VERIFIED, EXIT_USAGE = 0, 1, 2
_TCB_FIELDS = ("current_tcb", "reported_tcb", "committed_tcb", "launch_tcb")
_HEX = re.compile(rb"^(?:[0-9a-fA-F]{2})+$")

EvidenceArg = Annotated[
    Path,
    typer.Argument(
        help="The evidence: a report, a quote, a vTPM attestation or an EAT (CBOR or JWT) "
        "wrapping one; "
        "a raw binary file, or its base64 or hex text.",
        exists=True,
        dir_okay=False,
        readable=True,
    ),
]


def read_evidence(path: Path) -> bytes:
    """Raw bytes from a binary file, or from base64 or hex text."""
    data = path.read_bytes()
    text = b"".join(data.split())
    if text and _HEX.fullmatch(text):
        return bytes.fromhex(text.decode())
    if text and not _evidence_like(data):
        try:
            decoded = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return data
        if _evidence_like(decoded):
            return decoded
    return data


def _evidence_like(data: bytes) -> bool:
    return (
        bool(appraisal.detect_platform(data))
        or eat.looks_like_eat(data)
        or vtpm_verify.parse(data) is not None
    )


def _parse_time(raw: str | None) -> datetime:
    if raw is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{raw!r} is not an RFC 3339 time", param_hint="--at") from None
    if moment.tzinfo is None:
        raise typer.BadParameter("give a time zone (e.g. 2025-01-01T00:00:00Z)", param_hint="--at")
    return moment


def _parse_nonces(raw: list[str] | None) -> tuple[bytes, ...]:
    try:
        return tuple(bytes.fromhex(value) for value in raw or [])
    except ValueError:
        raise typer.BadParameter("must be hex", param_hint="--nonce") from None


def _parse_hex(raw: str | None) -> bytes | None:
    if raw is None:
        return None
    try:
        value = bytes.fromhex(raw)
    except ValueError:
        raise typer.BadParameter("must be hex", param_hint="--report-data") from None
    if len(value) != 64:
        raise typer.BadParameter(
            f"must be 64 bytes (128 hex digits), got {len(value)}", param_hint="--report-data"
        )
    return value


@attestation_app.command("verify")
def verify(
    evidence: EvidenceArg,
    cert: Annotated[
        Path | None,
        typer.Option(
            "--cert",
            help="The VCEK or VLEK (DER or PEM), for SEV-SNP.",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option(
            "--policy",
            help="go-sev-guest check.Config or go-tdx-guest checkconfig.Config JSON.",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ] = None,
    report_data: Annotated[
        str | None, typer.Option("--report-data", help="The expected report data, hex (64 bytes).")
    ] = None,
    nonce: Annotated[
        list[str] | None,
        typer.Option(
            "--nonce",
            help="An EAT's expected eat_nonce, hex (repeat to accept several).",
        ),
    ] = None,
    at: Annotated[
        str | None, typer.Option("--at", help="Verify as of this RFC 3339 time (default: now).")
    ] = None,
    crl: Annotated[
        str,
        typer.Option(
            "--crl",
            help="AMD's CRL for SEV-SNP: 'policy' (when the policy sets check_crl), 'open' "
            "(always; accepted when it cannot be had), 'closed' (always; refused then). "
            "Needs --fetch.",
        ),
    ] = "policy",
    fetch: Annotated[
        bool,
        typer.Option(
            "--fetch",
            help="Fetch missing certificates and collateral from "
            "AMD KDS / Intel PCS (otherwise offline).",
        ),
    ] = False,
) -> None:
    """Verify evidence against the vendors' roots (and a policy); print a JSON verdict.

    Exit 0 when verified, 1 when not (for any reason about the evidence), 2 on a
    usage error or an unreadable file."""
    if crl not in ("policy", "open", "closed"):
        raise typer.BadParameter("one of policy, open, closed", param_hint="--crl")
    raw = read_evidence(evidence)
    verdict = appraisal.appraise(
        raw,
        anchors=appraisal.Anchors(snp_roots=snp_roots(), tdx_roots=tdx_roots()),
        now=_parse_time(at),
        policy=policy.read_bytes() if policy else None,
        expected_report_data=_parse_hex(report_data),
        expected_nonces=_parse_nonces(nonce),
        endorsement=cert.read_bytes() if cert else None,
        fetcher=CachingHttpFetcher() if fetch else None,
        revocation=RevocationChecks(
            always=crl != "policy", when_unavailable="closed" if crl == "closed" else "open"
        ),
    )
    typer.echo(json.dumps(verdict.as_json(), indent=2, sort_keys=True))
    raise typer.Exit(EXIT_VERIFIED if verdict.verified else EXIT_NOT_VERIFIED)


@attestation_app.command("show")
def show(evidence: EvidenceArg) -> None:
    """Print the decoded fields of a report or quote, and an EAT's claims
    (nothing is verified)."""
    raw = read_evidence(evidence)
    try:
        token = eat.parse(raw)
        if token is not None:
            fields: dict[str, Any] = {
                "eat": {"form": token.form, "claims": token.summary()},
                "report": _fields(token.raw_report),
            }
        else:
            fields = _fields(raw)
    except AttestationError as exc:
        typer.echo(f"error: {exc.reason}", err=True)
        raise typer.Exit(EXIT_NOT_VERIFIED) from None
    json.dump(fields, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def _fields(raw: bytes) -> dict[str, Any]:
    """A report's, quote's or vTPM attestation's decoded fields; raises for anything else."""
    platform = appraisal.detect_platform(raw)
    attestation = vtpm_verify.parse(raw) if not platform else None
    if attestation is not None:
        quotes = []
        for tpm_quote in attestation.quotes:
            info = tpm2.parse_quote(tpm_quote.quote)
            quotes.append(
                {
                    "nonce": info.extra_data.hex(),
                    "selection": {bank: list(indices) for bank, indices in info.selection},
                    "pcrs": {str(i): v.hex() for i, v in sorted(tpm_quote.pcrs.pcrs.items())},
                }
            )
        return {
            "platform": "sev-snp+vtpm",
            "ak_pub": attestation.ak_pub.hex(),
            "quotes": quotes,
            "snp_report": _fields(vtpm_verify.snp_evidence(attestation)),
        }
    if platform == appraisal.SEV_SNP:
        attested = parse_attestation(raw)
        report = attested.report
        fields: dict[str, Any] = {
            "platform": platform,
            **report_claims(report),
            "measurement": report.measurement.hex(),
            "report_data": report.report_data.hex(),
            "chip_id": report.chip_id.hex(),
            "certificates": [str(entry.guid) for entry in attested.certificates.entries],
        }
        product = report.cpuid_product
        fields["tcb"] = (
            tcb_claims(report, product)
            if product
            else {name: getattr(report, name) for name in _TCB_FIELDS}
        )
        return fields
    if platform == appraisal.TDX:
        quote = parse_quote(raw)
        return {"platform": platform, "header": _plain(quote.header), "body": _plain(quote.body)}
    raise AttestationError("not an SEV-SNP report nor a TDX quote (v4 or v5)")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value
