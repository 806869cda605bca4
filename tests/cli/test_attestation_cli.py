"""``prism-backends attestation verify|show`` on the real vendor samples.

Most tests use typer's CliRunner; one runs ``python -m prism_backends`` in a
subprocess to check the exit codes end to end. Exit codes: 0 verified, 1 not
verified (any reason about the evidence), 2 usage error or unreadable file.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from typer.testing import CliRunner, Result

from prism_backends.attestation.snp import abi as snp_abi
from prism_backends.attestation.snp.roots import bundled_roots as snp_roots
from prism_backends.cli.main import app
from tests.attestation.snp import samples
from tests.attestation.tdx import vectors

SNP_REPORT = samples.TESTDATA / "milan-vcek-report.bin"
VCEK_DER = samples.TESTDATA / "milan-vcek.der"
TDX_V4 = vectors.TESTDATA / "spr-e4-quote-v4.dat"
TDX_V5 = vectors.TESTDATA / "quote-v5-sample.dat"

SNP_AT = "2025-01-01T00:00:00Z"
V4_AT = "2023-07-01T01:00:00Z"
V5_AT = "2026-06-01T00:00:00Z"

SNP_REPORT_DATA = (bytes([1, 2, 3, 4, 5]) + bytes(59)).hex()
SNP_GUEST_POLICY = 0xB0000  # the sample's: SMT, reserved bit 17, debug
V4_MR_TD = (
    "6363b8043668a3ad953278e10389574d326c6749fb78aa810ecd9336923db86f"
    "22fc00b8dcd404bc10d5e119d7215cbb"
)
V5_MR_TD = (
    "7348651a34b2d2d3462822e3a750ec6110125f36757c78480bbfc69cc0d21fb0"
    "01a1ced3ee19747dda8f750c3bc8f876"
)
MEASUREMENT_OFFSET = 0x90  # SNP report MEASUREMENT
TDX_MR_TD_OFFSET = 48 + 16 + 48 + 48 + 8 + 8 + 8  # header, then the body up to MR_TD

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_BOX = re.compile(r"[\u2500-\u257f]")
SUBPROCESS_TIMEOUT = 240
LENGTH = "--report-data: must be 64 bytes (128 hex digits)"


def plain(output: str) -> str:
    """Terminal output without colours, frames and line wrapping."""
    return " ".join(_BOX.sub(" ", _ANSI.sub("", output)).split())


@pytest.fixture(autouse=True)
def _wide_shell(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("TERMINAL_WIDTH", "200")
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def invoke(runner: CliRunner, *args: str | Path) -> Result:
    return runner.invoke(app, [str(arg) for arg in args], prog_name="prism-backends")


def verdict(result: Result) -> dict[str, Any]:
    """The JSON verdict on stdout (stdout must be exactly one JSON document)."""
    document = json.loads(result.stdout)
    assert isinstance(document, dict)
    return document


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def flipped(data: bytes, offset: int) -> bytes:
    out = bytearray(data)
    out[offset] ^= 0x01
    return bytes(out)


def snp_verify(runner: CliRunner, evidence: Path, *extra: str | Path) -> Result:
    return invoke(
        runner, "attestation", "verify", evidence, "--cert", VCEK_DER, "--at", SNP_AT, *extra
    )


# --- SEV-SNP: the real Milan sample ---------------------------------------------------------


def test_snp_sample_verifies_with_the_vcek_as_der(runner: CliRunner) -> None:
    result = snp_verify(runner, SNP_REPORT)

    assert result.exit_code == 0, result.output
    document = verdict(result)
    assert document["verified"] is True
    assert document["platform"] == "sev-snp"
    assert document["measurement"] == samples.MEASUREMENT
    assert document["report_data"] == SNP_REPORT_DATA
    assert document["claims"]["version"] == 2
    assert document["claims"]["chip_id"] == samples.CHIP_ID.hex()
    assert document["tcb"]["product"] == "Milan"
    assert document["tcb"]["reported_tcb"]["snp"] == 5
    assert "reason" not in document
    assert "failures" not in document


def test_snp_sample_verifies_with_the_vcek_as_pem(runner: CliRunner, tmp_path: Path) -> None:
    # By hand: the real VCEK's serial number is not positive, which cryptography
    # warns about (and warnings are errors here); the verifier itself copes.
    body = "\n".join(textwrap.wrap(base64.b64encode(samples.VCEK).decode(), 64))
    pem_text = f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"
    pem = write(tmp_path / "vcek.pem", pem_text.encode())

    result = invoke(runner, "attestation", "verify", SNP_REPORT, "--cert", pem, "--at", SNP_AT)

    assert result.exit_code == 0, result.output
    assert verdict(result)["verified"] is True


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda raw: base64.b64encode(raw), id="base64-one-line"),
        pytest.param(
            lambda raw: (
                "\n".join(textwrap.wrap(base64.b64encode(raw).decode(), 76)).encode() + b"\n"
            ),
            id="base64-wrapped",
        ),
        pytest.param(lambda raw: raw.hex().encode() + b"\n", id="hex-lower"),
        pytest.param(
            lambda raw: "\n".join(textwrap.wrap(raw.hex().upper(), 60)).encode() + b"\n",
            id="hex-upper-wrapped",
        ),
    ],
)
def test_snp_sample_as_text_verifies(
    runner: CliRunner, tmp_path: Path, encode: Callable[[bytes], bytes]
) -> None:
    text = write(tmp_path / "report.txt", encode(samples.REPORT))

    result = snp_verify(runner, text)

    assert result.exit_code == 0, result.output
    document = verdict(result)
    assert document["verified"] is True
    assert document["measurement"] == samples.MEASUREMENT


def test_snp_sample_with_its_certificate_table_needs_no_cert(
    runner: CliRunner, tmp_path: Path
) -> None:
    milan = snp_roots()["Milan"]
    assert milan.ask is not None
    table = snp_abi.encode_cert_table(
        [
            (snp_abi.VCEK_GUID, samples.VCEK),
            (snp_abi.ASK_GUID, milan.ask.public_bytes(Encoding.DER)),
            (snp_abi.ARK_GUID, milan.ark.public_bytes(Encoding.DER)),
        ]
    )
    evidence = write(tmp_path / "extended.bin", samples.REPORT + table)

    result = invoke(runner, "attestation", "verify", evidence, "--at", SNP_AT)

    assert result.exit_code == 0, result.output
    assert verdict(result)["verified"] is True


def test_snp_sample_without_the_vcek_offline_is_not_verified(runner: CliRunner) -> None:
    result = invoke(runner, "attestation", "verify", SNP_REPORT, "--at", SNP_AT)

    assert result.exit_code == 1, result.output
    document = verdict(result)
    assert document["verified"] is False
    assert document["platform"] == "sev-snp"
    assert "VCEK" in document["reason"]
    assert "measurement" not in document  # nothing verified, nothing vouched for


def test_snp_sample_before_the_vcek_is_valid_is_not_verified(runner: CliRunner) -> None:
    # AMD's Milan ARK and ASK are valid from 2020-10-22; the VCEK from 2022-09-24.
    result = invoke(
        runner,
        "attestation",
        "verify",
        SNP_REPORT,
        "--cert",
        VCEK_DER,
        "--at",
        "2021-06-01T00:00:00Z",
    )

    assert result.exit_code == 1, result.output
    document = verdict(result)
    assert document["verified"] is False
    assert "VCEK certificate is not valid until 2022-09-24" in document["reason"]


def test_snp_sample_after_the_vcek_expired_is_not_verified(runner: CliRunner) -> None:
    result = invoke(
        runner,
        "attestation",
        "verify",
        SNP_REPORT,
        "--cert",
        VCEK_DER,
        "--at",
        "2030-01-01T00:00:00+02:00",
    )

    assert result.exit_code == 1, result.output
    assert "VCEK certificate expired" in verdict(result)["reason"]


def test_snp_sample_with_a_flipped_byte_is_not_verified(runner: CliRunner, tmp_path: Path) -> None:
    evidence = write(tmp_path / "flipped.bin", flipped(samples.REPORT, MEASUREMENT_OFFSET))

    result = snp_verify(runner, evidence)

    assert result.exit_code == 1, result.output
    document = verdict(result)
    assert document["verified"] is False
    assert "signature does not verify" in document["reason"]


def test_snp_report_data_that_matches_verifies(runner: CliRunner) -> None:
    result = snp_verify(runner, SNP_REPORT, "--report-data", SNP_REPORT_DATA.upper())

    assert result.exit_code == 0, result.output
    assert verdict(result)["verified"] is True


def test_snp_report_data_mismatch_is_not_verified(runner: CliRunner) -> None:
    expected = "ab" * 64

    result = snp_verify(runner, SNP_REPORT, "--report-data", expected)

    assert result.exit_code == 1, result.output
    document = verdict(result)
    assert document["verified"] is False
    assert document["failures"] == [
        {"field": "report_data", "expected": expected, "actual": SNP_REPORT_DATA}
    ]
    assert document["reason"].startswith("report_data: expected ")
    # The signatures did verify: what they vouch for is shown.
    assert document["measurement"] == samples.MEASUREMENT


def _b64(hex_text: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_text)).decode()


def _snp_policy(measurement_hex: str, *, camel: bool) -> dict[str, Any]:
    """A go-sev-guest check.Config pinning the sample's measurement (and allowing
    its guest policy: SMT and debug)."""
    if camel:
        return {
            "policy": {
                "measurement": _b64(measurement_hex),
                "policy": str(SNP_GUEST_POLICY),
                "hostData": _b64("00" * 32),
                "familyId": _b64("00" * 16),
                "imageId": _b64("00" * 16),
                "minimumGuestSvn": 0,
                "vmpl": 0,
                "minimumVersion": "1.49",
                "reportIdMa": _b64("ff" * 32),
            },
            "rootOfTrust": {"productLine": "Milan", "checkCrl": False},
        }
    return {
        "policy": {
            "measurement": measurement_hex,  # hex is accepted for fixed-size fields
            "policy": SNP_GUEST_POLICY,
            "host_data": _b64("00" * 32),
            "family_id": _b64("00" * 16),
            "image_id": _b64("00" * 16),
            "minimum_guest_svn": 0,
            "vmpl": 0,
            "minimum_version": "1.49",
            "report_id_ma": _b64("ff" * 32),
        },
        "root_of_trust": {"product_line": "Milan", "check_crl": False},
    }


OTHER_MEASUREMENT = "ee" * 48


@pytest.mark.parametrize("camel", [False, True], ids=["snake_case", "camelCase"])
def test_snp_policy_with_the_samples_measurement_verifies(
    runner: CliRunner, tmp_path: Path, camel: bool
) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(_snp_policy(samples.MEASUREMENT, camel=camel)))

    result = snp_verify(runner, SNP_REPORT, "--policy", policy)

    assert result.exit_code == 0, result.output
    assert verdict(result)["verified"] is True


@pytest.mark.parametrize("camel", [False, True], ids=["snake_case", "camelCase"])
def test_snp_policy_with_another_measurement_is_not_verified(
    runner: CliRunner, tmp_path: Path, camel: bool
) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(_snp_policy(OTHER_MEASUREMENT, camel=camel)))

    result = snp_verify(runner, SNP_REPORT, "--policy", policy)

    assert result.exit_code == 1, result.output
    document = verdict(result)
    assert document["verified"] is False
    assert document["failures"] == [
        {"field": "measurement", "expected": OTHER_MEASUREMENT, "actual": samples.MEASUREMENT}
    ]


def test_snp_policy_that_forbids_the_samples_debug_guest_lists_each_failure(
    runner: CliRunner, tmp_path: Path
) -> None:
    # No "policy" value: no optional guest feature allowed; the sample has SMT and debug.
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"policy": {"measurement": _b64(OTHER_MEASUREMENT)}}))

    result = snp_verify(runner, SNP_REPORT, "--policy", policy)

    assert result.exit_code == 1, result.output
    failures = {f["field"]: f for f in verdict(result)["failures"]}
    assert set(failures) == {"policy.smt", "policy.debug", "measurement"}
    assert failures["policy.debug"] == {
        "field": "policy.debug",
        "expected": "false",
        "actual": "true",
    }


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"{not json", "the attestation policy is not valid"),
        (b'{"policy": {"measurment": "AA=="}}', "unknown key(s) in policy: measurment"),
        (b'{"policy": {"measurement": "00"}}', "policy.measurement must be 48 bytes"),
    ],
)
def test_snp_invalid_policy_is_not_verified_with_a_clear_reason(
    runner: CliRunner, tmp_path: Path, content: bytes, reason: str
) -> None:
    policy = write(tmp_path / "policy.json", content)

    result = snp_verify(runner, SNP_REPORT, "--policy", policy)

    assert result.exit_code == 1, result.output
    document = verdict(result)
    assert document["verified"] is False
    assert document["reason"].startswith("the attestation policy is not valid")
    assert reason in document["reason"]


# --- TDX: Intel's real v4 and v5 quotes ---------------------------------------------------


@pytest.mark.parametrize(
    ("quote", "at", "version", "mr_td"),
    [(TDX_V4, V4_AT, 4, V4_MR_TD), (TDX_V5, V5_AT, 5, V5_MR_TD)],
    ids=["v4", "v5"],
)
def test_tdx_samples_verify_at_their_times(
    runner: CliRunner, quote: Path, at: str, version: int, mr_td: str
) -> None:
    result = invoke(runner, "attestation", "verify", quote, "--at", at)

    assert result.exit_code == 0, result.output
    document = verdict(result)
    assert document["verified"] is True
    assert document["platform"] == "tdx"
    assert document["measurement"] == mr_td
    assert document["claims"]["mr_td"] == mr_td
    assert document["claims"]["quote_version"] == version


def test_tdx_v4_as_base64_verifies(runner: CliRunner, tmp_path: Path) -> None:
    text = write(tmp_path / "quote.b64", base64.b64encode(vectors.quote_v4()) + b"\n")

    result = invoke(runner, "attestation", "verify", text, "--at", V4_AT)

    assert result.exit_code == 0, result.output
    assert verdict(result)["measurement"] == V4_MR_TD


def test_tdx_v5_before_its_pck_certificate_is_valid_is_not_verified(runner: CliRunner) -> None:
    result = invoke(runner, "attestation", "verify", TDX_V5, "--at", V4_AT)

    assert result.exit_code == 1, result.output
    assert "not valid before 2026-01-27" in verdict(result)["reason"]


def test_tdx_quote_with_a_flipped_byte_is_not_verified(runner: CliRunner, tmp_path: Path) -> None:
    quote = vectors.quote_v4()
    assert quote[TDX_MR_TD_OFFSET : TDX_MR_TD_OFFSET + 48].hex() == V4_MR_TD
    evidence = write(tmp_path / "flipped.dat", flipped(quote, TDX_MR_TD_OFFSET))

    result = invoke(runner, "attestation", "verify", evidence, "--at", V4_AT)

    assert result.exit_code == 1, result.output
    document = verdict(result)
    assert document["verified"] is False
    assert document["platform"] == "tdx"
    assert "signature" in document["reason"]


@pytest.mark.parametrize("camel", [False, True], ids=["snake_case", "camelCase"])
def test_tdx_policy_matching_and_mismatching_mr_td(
    runner: CliRunner, tmp_path: Path, camel: bool
) -> None:
    body_key = "tdQuoteBodyPolicy" if camel else "td_quote_body_policy"
    owner_key = "mrOwner" if camel else "mr_owner"

    def policy(mr_td: str) -> Path:
        document = {
            "policy": {
                body_key: {"mr_td" if not camel else "mrTd": _b64(mr_td), owner_key: "00" * 48}
            }
        }
        return write(tmp_path / f"policy-{mr_td[:4]}.json", json.dumps(document).encode())

    good = invoke(
        runner, "attestation", "verify", TDX_V4, "--at", V4_AT, "--policy", policy(V4_MR_TD)
    )
    bad = invoke(
        runner,
        "attestation",
        "verify",
        TDX_V4,
        "--at",
        V4_AT,
        "--policy",
        policy(OTHER_MEASUREMENT),
    )

    assert good.exit_code == 0, good.output
    assert verdict(good)["verified"] is True
    assert bad.exit_code == 1, bad.output
    assert verdict(bad)["failures"] == [
        {"field": "mr_td", "expected": OTHER_MEASUREMENT, "actual": V4_MR_TD}
    ]


def test_tdx_report_data_mismatch_is_not_verified(runner: CliRunner) -> None:
    result = invoke(
        runner, "attestation", "verify", TDX_V4, "--at", V4_AT, "--report-data", "00" * 64
    )

    assert result.exit_code == 1, result.output
    failures = verdict(result)["failures"]
    assert [f["field"] for f in failures] == ["report_data"]
    assert failures[0]["expected"] == "00" * 64


# --- not evidence at all ----------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, world\n", bytes(4096), b"abcd" * 10, b"A" * 2000],
    ids=["empty", "text", "zeros", "short-hex", "base64-of-nothing"],
)
def test_what_is_not_evidence_is_not_verified(
    runner: CliRunner, tmp_path: Path, content: bytes
) -> None:
    evidence = write(tmp_path / "junk", content)

    result = invoke(runner, "attestation", "verify", evidence)

    assert result.exit_code == 1, result.output
    document = verdict(result)
    assert document == {
        "platform": "",
        "verified": False,
        "reason": "not an SEV-SNP report nor a TDX quote (v4 or v5)",
    }


def test_a_cert_that_is_not_a_certificate_is_not_verified(
    runner: CliRunner, tmp_path: Path
) -> None:
    cert = write(tmp_path / "vcek.pem", b"not a certificate\n")

    result = invoke(runner, "attestation", "verify", SNP_REPORT, "--cert", cert, "--at", SNP_AT)

    assert result.exit_code == 1, result.output
    assert "VCEK certificate is not a DER or PEM X.509 certificate" in verdict(result)["reason"]


def test_a_cert_whose_key_does_not_parse_is_not_verified(runner: CliRunner, tmp_path: Path) -> None:
    at = samples.VCEK.find(b"\x03\x62\x00\x04")  # the EC point's BIT STRING
    cert = write(tmp_path / "vcek.der", samples.VCEK[: at + 3] + b"\x05" + samples.VCEK[at + 4 :])

    result = invoke(runner, "attestation", "verify", SNP_REPORT, "--cert", cert, "--at", SNP_AT)

    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "VCEK" in verdict(result)["reason"]


# --- usage errors: exit 2, nothing on stdout -------------------------------------------------


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["verify", "{missing}"], "does not exist"),
        (["verify", "{report}", "--cert", "{missing}"], "--cert"),
        (["verify", "{report}", "--policy", "{missing}"], "--policy"),
        (["verify", "{directory}"], "is a directory"),
        (["verify", "{report}", "--at", "yesterday"], "'yesterday' is not an RFC 3339 time"),
        (["verify", "{report}", "--at", "2025-01-01T00:00:00"], "give a time zone"),
        (["verify", "{report}", "--report-data", "zz" * 64], "--report-data: must be hex"),
        (["verify", "{report}", "--report-data", "0102"], f"{LENGTH}, got 2"),
        (["verify", "{report}", "--report-data", "00" * 65], f"{LENGTH}, got 65"),
        (["verify"], "Missing argument"),
        (["verify", "{report}", "--no-such-option"], "No such option"),
        (["show", "{missing}"], "does not exist"),
    ],
    ids=[
        "missing-evidence",
        "missing-cert",
        "missing-policy",
        "directory",
        "bad-at",
        "naive-at",
        "report-data-not-hex",
        "report-data-short",
        "report-data-long",
        "no-evidence",
        "unknown-option",
        "show-missing",
    ],
)  # fmt: skip
def test_usage_errors_exit_2(
    runner: CliRunner, tmp_path: Path, args: list[str], mentions: str
) -> None:
    paths = {"missing": tmp_path / "missing.bin", "report": SNP_REPORT, "directory": tmp_path}
    argv = [arg.format(**paths) for arg in args]

    result = invoke(runner, "attestation", *argv)

    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert mentions in plain(result.stderr)


# --- show -------------------------------------------------------------------------------


def _show(runner: CliRunner, evidence: Path) -> dict[str, Any]:
    result = invoke(runner, "attestation", "show", evidence)
    assert result.exit_code == 0, result.output
    return verdict(result)


def test_show_snp_prints_the_decoded_report(runner: CliRunner) -> None:
    fields = _show(runner, SNP_REPORT)

    assert fields["platform"] == "sev-snp"
    assert fields["version"] == 2
    assert fields["policy"] == SNP_GUEST_POLICY
    assert fields["vmpl"] == 0
    assert fields["signing_key"] == "VCEK"
    assert fields["chip_id"] == samples.CHIP_ID.hex()
    assert fields["report_id_ma"] == "ff" * 32
    assert fields["certificates"] == []


def test_show_snp_lists_its_certificate_table(runner: CliRunner, tmp_path: Path) -> None:
    table = snp_abi.encode_cert_table([(snp_abi.VCEK_GUID, samples.VCEK)])
    evidence = write(tmp_path / "extended.bin", samples.REPORT + table)

    assert _show(runner, evidence)["certificates"] == [str(snp_abi.VCEK_GUID)]


def test_show_snp_prints_the_measurement_and_report_data(runner: CliRunner) -> None:
    fields = _show(runner, SNP_REPORT)

    assert fields["measurement"] == samples.MEASUREMENT
    assert fields["report_data"] == SNP_REPORT_DATA


def test_show_snp_as_base64_text(runner: CliRunner, tmp_path: Path) -> None:
    text = write(tmp_path / "report.b64", base64.b64encode(samples.REPORT))

    assert _show(runner, text) == _show(runner, SNP_REPORT)


@pytest.mark.parametrize(
    ("quote", "version", "mr_td"),
    [(TDX_V4, 4, V4_MR_TD), (TDX_V5, 5, V5_MR_TD)],
    ids=["v4", "v5"],
)
def test_show_tdx_prints_header_and_body(
    runner: CliRunner, quote: Path, version: int, mr_td: str
) -> None:
    fields = _show(runner, quote)

    assert fields["platform"] == "tdx"
    assert fields["header"]["version"] == version
    assert fields["header"]["tee_type"] == 0x81
    assert fields["header"]["qe_vendor_id"] == "939a7233f79c4ca9940a0db3957f0607"
    assert fields["body"]["mr_td"] == mr_td
    assert len(fields["body"]["rtmrs"]) == 4
    assert len(fields["body"]["report_data"]) == 128
    if version == 5:
        assert fields["body"]["mr_service_td"] == "00" * 48
        assert fields["body"]["tee_tcb_svn2"] == "0d010400000000000000000000000000"
    else:
        assert fields["body"]["mr_service_td"] is None


def test_show_what_is_not_evidence_exits_1(runner: CliRunner, tmp_path: Path) -> None:
    result = invoke(runner, "attestation", "show", write(tmp_path / "junk", b"junk"))

    assert result.exit_code == 1
    assert result.stdout == ""
    assert "not an SEV-SNP report nor a TDX quote" in result.stderr


def test_show_malformed_evidence_exits_1(runner: CliRunner, tmp_path: Path) -> None:
    # Detected as SEV-SNP (version 2, long enough) but its reserved bytes are not zero.
    junk = bytes([2, 0, 0, 0]) + b"\xa5" * (snp_abi.REPORT_SIZE - 4)

    result = invoke(runner, "attestation", "show", write(tmp_path / "junk.bin", junk))

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")


# --- a real process ------------------------------------------------------------------------


def run_cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("PRISM_BACKENDS_") or name.startswith("PRISM_BACKENDS_TEST_")
    }
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "prism_backends", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )


@pytest.mark.slow
def test_process_exit_codes_end_to_end(tmp_path: Path) -> None:
    verified = run_cli(
        "attestation", "verify", SNP_REPORT, "--cert", VCEK_DER, "--at", SNP_AT, cwd=tmp_path
    )
    refused = run_cli("attestation", "verify", SNP_REPORT, "--at", SNP_AT, cwd=tmp_path)
    usage = run_cli("attestation", "verify", SNP_REPORT, "--at", "not-a-time", cwd=tmp_path)

    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["verified"] is True
    assert refused.returncode == 1, refused.stderr
    assert "VCEK" in json.loads(refused.stdout)["reason"]
    assert usage.returncode == 2
    assert usage.stdout == ""
    assert "--at" in plain(usage.stderr)
    for done in (verified, refused, usage):
        assert "Traceback" not in done.stderr
