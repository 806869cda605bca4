"""``prism-backends attestation verify|show`` on the real vendor samples
wrapped as Cocos' agent wraps evidence (an EAT, CBOR or JWT, binary or as
text): verified as the bare samples are, tampered copies refused."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.attestation import eat_wrap
from tests.attestation.snp import samples
from tests.attestation.tdx import vectors
from tests.cli.test_attestation_cli import (
    SNP_AT,
    V4_AT,
    VCEK_DER,
    invoke,
    runner,  # noqa: F401 - a fixture
    verdict,
    write,
)

NONCE = bytes(range(32))
Wrap = Callable[..., bytes]
WRAPS = [pytest.param(eat_wrap.cbor_eat, id="cbor"), pytest.param(eat_wrap.jwt_eat, id="jwt")]


@pytest.mark.parametrize("wrap", WRAPS)
@pytest.mark.parametrize("as_text", [False, True], ids=["binary", "base64"])
def test_the_snp_sample_as_an_eat_verifies(
    runner: CliRunner,  # noqa: F811
    tmp_path: Path,
    wrap: Wrap,
    as_text: bool,
) -> None:
    token = wrap(samples.REPORT, NONCE)
    evidence = write(tmp_path / "eat", base64.b64encode(token) if as_text else token)
    result = invoke(
        runner, "attestation", "verify", evidence, "--cert", VCEK_DER, "--at", SNP_AT,
        "--nonce", NONCE.hex(),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    document = verdict(result)
    assert document["verified"] is True
    assert document["measurement"] == samples.MEASUREMENT
    assert document["eat"]["claims"]["platform_type"] == "SNP"


@pytest.mark.parametrize("wrap", WRAPS)
def test_the_tdx_sample_as_an_eat_verifies(
    runner: CliRunner,  # noqa: F811
    tmp_path: Path,
    wrap: Wrap,
) -> None:
    evidence = write(tmp_path / "eat", wrap(vectors.quote_v4(), NONCE, "TDX"))
    result = invoke(runner, "attestation", "verify", evidence, "--at", V4_AT)
    assert result.exit_code == 0, result.output
    assert verdict(result)["eat"]["form"] in ("cbor", "jwt")


@pytest.mark.parametrize("wrap", WRAPS)
@pytest.mark.parametrize(
    ("tamper", "named"),
    [
        ("report", "signature"),
        ("claim", "x-cocos-sevsnp.measurement"),
        ("nonce", "eat_nonce"),
    ],
)
def test_tampered_copies_are_refused_naming_the_check(
    runner: CliRunner,  # noqa: F811
    tmp_path: Path,
    wrap: Wrap,
    tamper: str,
    named: str,
) -> None:
    report, lies, nonce = samples.REPORT, {}, NONCE
    if tamper == "report":
        changed = bytearray(report)
        changed[0x90] ^= 0x01
        report = bytes(changed)
    elif tamper == "claim":
        lies = {"x-cocos-sevsnp.measurement": bytes(48)}
    else:
        nonce = bytes(32)
    evidence = write(tmp_path / "eat", wrap(report, nonce, lies=lies))
    result = invoke(
        runner, "attestation", "verify", evidence, "--cert", VCEK_DER, "--at", SNP_AT,
        "--nonce", NONCE.hex(),
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    document = verdict(result)
    assert document["verified"] is False
    assert named in document["reason"].lower() or named in document["reason"]


def test_show_prints_the_claims_and_the_report(
    runner: CliRunner,  # noqa: F811
    tmp_path: Path,
) -> None:
    evidence = write(tmp_path / "eat.jwt", eat_wrap.jwt_eat(samples.REPORT, NONCE))
    result = invoke(runner, "attestation", "show", evidence)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["eat"]["form"] == "jwt"
    assert document["eat"]["claims"]["x-cocos-sevsnp"]["measurement"] == samples.MEASUREMENT
    assert document["report"]["measurement"] == samples.MEASUREMENT


def test_show_refuses_an_unreadable_token(
    runner: CliRunner,  # noqa: F811
    tmp_path: Path,
) -> None:
    evidence = write(tmp_path / "eat.jwt", b"eyJhbGciOiJFUzI1NiJ9.bm90IGpzb24.c2ln")
    result = invoke(runner, "attestation", "show", evidence)
    assert result.exit_code == 1
    assert "JWT" in result.output


def test_vtpm_evidence_verifies_and_shows(
    runner: CliRunner,  # noqa: F811
    tmp_path: Path,
) -> None:
    from prism_backends.attestation.snp import abi as snp_abi
    from tests.attestation.snp import signer as snp_signer
    from tests.attestation.vtpm_signer import VtpmEvidence

    hierarchy = snp_signer.hierarchy(snp_abi.MILAN)
    vcek = hierarchy.endorsement(tcb=snp_signer.MILAN_TCB, chip_id=snp_signer.CHIP_ID)
    raw = VtpmEvidence(tee_nonce=bytes(64), nonce=NONCE).build(vcek)
    evidence = write(tmp_path / "vtpm.b64", base64.b64encode(raw))
    shown = invoke(runner, "attestation", "show", evidence)
    assert shown.exit_code == 0, shown.output
    document = json.loads(shown.stdout)
    assert document["platform"] == "sev-snp+vtpm"
    assert document["quotes"][0]["nonce"] == NONCE.hex()
    assert document["snp_report"]["platform"] == "sev-snp"
    # The test AMD roots are not AMD's: verification runs and says where it stopped.
    verified = invoke(runner, "attestation", "verify", evidence, "--nonce", NONCE.hex())
    assert verified.exit_code == 1
    assert "does not verify with the ASK key" in verdict(verified)["reason"]
