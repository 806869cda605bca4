"""appraise(), detect_platform() and pinned_policy(): the real samples, the test signers."""

from __future__ import annotations

import base64
import json
import struct
from datetime import datetime

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from prism_backends.attestation.appraisal import (
    SEV_SNP,
    TDX,
    Anchors,
    Verdict,
    appraise,
    detect_platform,
)
from prism_backends.attestation.common import CheckFailure, Verified
from prism_backends.attestation.pinning import pinned_policy
from prism_backends.attestation.snp import abi as snp_abi
from prism_backends.attestation.snp.roots import bundled_roots as snp_bundled_roots
from prism_backends.attestation.tdx.roots import bundled_roots as tdx_bundled_roots
from tests.attestation.snp import samples
from tests.attestation.snp import signer as snp_signer
from tests.attestation.snp.signer import Endorsement, ReportSpec
from tests.attestation.tdx import signer as tdx_signer
from tests.attestation.tdx import vectors
from tests.attestation.tdx.signer import Pki, QuoteFields

BUNDLED = Anchors(snp_roots=snp_bundled_roots(), tdx_roots=tdx_bundled_roots())
MILAN = snp_signer.hierarchy(snp_abi.MILAN)
SPEC = ReportSpec()
OTHER_MEASUREMENT = bytes([0xEE]) * 48


@pytest.fixture(scope="module")
def vcek() -> Endorsement:
    return MILAN.endorsement(tcb=SPEC.reported_tcb, chip_id=SPEC.chip_id)


@pytest.fixture(scope="module")
def snp_anchors() -> Anchors:
    return Anchors(snp_roots=MILAN.roots(), tdx_roots=[])


@pytest.fixture(scope="module")
def pki() -> Pki:
    return tdx_signer.make_pki()


@pytest.fixture(scope="module")
def tdx_anchors(pki: Pki) -> Anchors:
    return Anchors(snp_roots={}, tdx_roots=[pki.root.cert])


def _snp(spec: ReportSpec, vcek: Endorsement) -> bytes:
    return snp_signer.signed(spec, vcek)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _extended(report: bytes) -> bytes:
    milan = snp_bundled_roots()["Milan"]
    assert milan.ask is not None
    return report + snp_abi.encode_cert_table(
        [
            (snp_abi.VCEK_GUID, samples.VCEK),
            (snp_abi.ASK_GUID, milan.ask.public_bytes(Encoding.DER)),
            (snp_abi.ARK_GUID, milan.ark.public_bytes(Encoding.DER)),
        ]
    )


# --- detect_platform ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "platform"),
    [
        pytest.param(samples.REPORT, SEV_SNP, id="snp-v2-sample"),
        pytest.param(_extended(samples.REPORT), SEV_SNP, id="snp-with-certificate-table"),
        pytest.param(vectors.quote_v4(), TDX, id="tdx-v4-sample"),
        pytest.param(vectors.quote_v5(), TDX, id="tdx-v5-sample"),
        pytest.param(struct.pack("<HHI", 4, 2, 0x81), TDX, id="tdx-header-only"),
    ],
)
def test_detect_platform_on_evidence(raw: bytes, platform: str) -> None:
    assert detect_platform(raw) == platform


@pytest.mark.parametrize("version", [3, 5])
def test_detect_platform_on_synthetic_snp_versions(version: int, vcek: Endorsement) -> None:
    assert detect_platform(_snp(SPEC.replace(version=version), vcek)) == SEV_SNP


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x04\x00", id="two-bytes"),
        pytest.param(b"hello, world" * 200, id="text"),
        pytest.param(bytes(snp_abi.REPORT_SIZE), id="zero-report"),
        pytest.param(b"\xff" * 5000, id="ones"),
        pytest.param(samples.REPORT[:-1], id="snp-truncated"),
        pytest.param(struct.pack("<I", 1) + samples.REPORT[4:], id="snp-version-1"),
        pytest.param(struct.pack("<I", 6) + samples.REPORT[4:], id="snp-version-6"),
        pytest.param(base64.b64encode(samples.REPORT), id="snp-as-base64"),
        pytest.param(samples.REPORT.hex().encode(), id="snp-as-hex"),
        pytest.param(struct.pack("<HHI", 3, 2, 0x81) + bytes(600), id="tdx-v3"),
        pytest.param(struct.pack("<HHI", 4, 2, 0x00) + bytes(600), id="sgx-quote"),
        pytest.param(base64.b64encode(vectors.quote_v4()), id="tdx-as-base64"),
    ],
)
def test_detect_platform_on_junk(raw: bytes) -> None:
    assert detect_platform(raw) == ""


def test_an_snp_v5_report_with_guest_svn_0x81_is_snp(
    vcek: Endorsement, snp_anchors: Anchors
) -> None:
    raw = _snp(SPEC.replace(version=5, guest_svn=0x81), vcek)

    assert detect_platform(raw) == SEV_SNP
    assert appraise(raw, anchors=snp_anchors, now=snp_signer.NOW, endorsement=vcek.der).verified


def test_appraise_junk_is_not_recognised() -> None:
    verdict = appraise(b"junk", anchors=BUNDLED, now=samples.NOW)

    assert verdict == Verdict("", False, "not an SEV-SNP report nor a TDX quote (v4 or v5)")
    assert verdict.as_json() == {
        "platform": "",
        "verified": False,
        "reason": "not an SEV-SNP report nor a TDX quote (v4 or v5)",
    }


# --- appraise: SEV-SNP with the synthetic signer ------------------------------------------------


def _snp_policy(**overrides: object) -> bytes:
    policy: dict[str, object] = {
        "measurement": _b64(SPEC.measurement),
        "policy": SPEC.policy,
        "host_data": _b64(SPEC.host_data),
        "vmpl": SPEC.vmpl,
        "minimum_guest_svn": SPEC.guest_svn,
        "product": {"name": "SEV_PRODUCT_MILAN"},
    }
    policy.update(overrides)
    return json.dumps({"policy": policy, "root_of_trust": {"product_line": "Milan"}}).encode()


def test_synthetic_snp_with_a_matching_policy_is_verified(
    vcek: Endorsement, snp_anchors: Anchors
) -> None:
    report_data = bytes(range(64))
    raw = _snp(SPEC.replace(report_data=report_data), vcek)

    verdict = appraise(
        raw,
        anchors=snp_anchors,
        now=snp_signer.NOW,
        policy=_snp_policy(),
        expected_report_data=report_data,
        endorsement=vcek.der,
    )

    assert verdict.verified, verdict.reason
    assert verdict.platform == SEV_SNP
    assert verdict.reason == ""
    assert verdict.failures == ()
    assert verdict.evidence is not None
    assert verdict.evidence.measurement == SPEC.measurement.hex()
    assert verdict.evidence.report_data == report_data
    document = verdict.as_json()
    assert document["verified"] is True
    assert document["measurement"] == SPEC.measurement.hex()
    assert document["report_data"] == report_data.hex()
    assert "failures" not in document and "reason" not in document


def test_synthetic_snp_failures_name_field_expected_and_actual(
    vcek: Endorsement, snp_anchors: Anchors
) -> None:
    raw = _snp(SPEC, vcek)
    policy = _snp_policy(
        measurement=OTHER_MEASUREMENT.hex(),
        host_data=_b64(b"\x01" * 32),
        vmpl=2,
        minimum_guest_svn=7,
    )

    verdict = appraise(
        raw,
        anchors=snp_anchors,
        now=snp_signer.NOW,
        policy=policy,
        expected_report_data=b"\x55" * 64,
        endorsement=vcek.der,
    )

    assert not verdict.verified
    assert verdict.platform == SEV_SNP
    assert verdict.evidence is not None  # the signatures verified
    assert verdict.failures[0] == CheckFailure("report_data", "55" * 64, "00" * 64)
    assert set(verdict.failures[1:]) == {
        CheckFailure("guest_svn", ">= 7", "1"),
        CheckFailure("host_data", "01" * 32, "00" * 32),
        CheckFailure("measurement", OTHER_MEASUREMENT.hex(), SPEC.measurement.hex()),
        CheckFailure("vmpl", "2", "0"),
    }
    assert verdict.reason == "; ".join(str(f) for f in verdict.failures)
    assert f"measurement: expected {OTHER_MEASUREMENT.hex()}, got" in verdict.reason
    document = verdict.as_json()
    assert document["verified"] is False
    assert {"field": "vmpl", "expected": "2", "actual": "0"} in document["failures"]
    assert document["measurement"] == SPEC.measurement.hex()


def test_synthetic_snp_guest_policy_beyond_the_policy_fails(
    vcek: Endorsement, snp_anchors: Anchors
) -> None:
    debug = SPEC.policy | 1 << 19
    raw = _snp(SPEC.replace(policy=debug), vcek)

    verdict = appraise(
        raw, anchors=snp_anchors, now=snp_signer.NOW, policy=_snp_policy(), endorsement=vcek.der
    )

    assert verdict.failures == (CheckFailure("policy.debug", "false", "true"),)


def test_synthetic_snp_under_amds_roots_is_not_verified(vcek: Endorsement) -> None:
    verdict = appraise(_snp(SPEC, vcek), anchors=BUNDLED, now=snp_signer.NOW, endorsement=vcek.der)

    assert not verdict.verified
    assert verdict.evidence is None
    assert verdict.failures == ()
    assert "signature does not verify" in verdict.reason


def test_synthetic_snp_without_its_vcek_is_not_verified(snp_anchors: Anchors) -> None:
    raw = _snp(SPEC, MILAN.endorsement(tcb=SPEC.reported_tcb, chip_id=SPEC.chip_id))

    verdict = appraise(raw, anchors=snp_anchors, now=snp_signer.NOW)

    assert not verdict.verified
    assert "no VCEK certificate" in verdict.reason


def test_a_policy_naming_another_product_is_not_verified(
    vcek: Endorsement, snp_anchors: Anchors
) -> None:
    policy = json.dumps({"root_of_trust": {"product_line": "Genoa"}}).encode()

    verdict = appraise(
        _snp(SPEC, vcek),
        anchors=snp_anchors,
        now=snp_signer.NOW,
        policy=policy,
        endorsement=vcek.der,
    )

    assert not verdict.verified
    assert "Genoa" in verdict.reason


def _vcek_with_a_bad_point() -> bytes:
    """The real VCEK with its EC point's 0x04 (uncompressed) prefix made 0x05: it
    still loads (cryptography parses lazily), but its public key does not."""
    at = samples.VCEK.find(b"\x03\x62\x00\x04")  # BIT STRING, 98 bytes, the point
    assert at > 0
    return samples.VCEK[: at + 3] + b"\x05" + samples.VCEK[at + 4 :]


@pytest.mark.parametrize("where", ["given", "certificate-table"])
def test_a_vcek_that_does_not_parse_is_refused_not_raised(where: str) -> None:
    bad = _vcek_with_a_bad_point()
    if where == "given":
        raw, endorsement = samples.REPORT, bad
    else:
        raw = samples.REPORT + snp_abi.encode_cert_table([(snp_abi.VCEK_GUID, bad)])
        endorsement = None

    verdict = appraise(raw, anchors=BUNDLED, now=samples.NOW, endorsement=endorsement)

    assert not verdict.verified
    assert "VCEK" in verdict.reason


# --- policies that are not policies -------------------------------------------------------------


@pytest.mark.parametrize("policy", [b"not json", b"{", b"[1, 2]", b"null", b'"text"'])
def test_snp_policy_that_is_not_a_json_object_is_a_clear_reason(
    vcek: Endorsement, snp_anchors: Anchors, policy: bytes
) -> None:
    verdict = appraise(
        _snp(SPEC, vcek),
        anchors=snp_anchors,
        now=snp_signer.NOW,
        policy=policy,
        endorsement=vcek.der,
    )

    assert not verdict.verified
    assert verdict.platform == SEV_SNP
    assert verdict.reason.startswith("the attestation policy is not valid: ")
    assert verdict.evidence is None


@pytest.mark.parametrize("policy", [b"not json", b"{", b"[1, 2]", b'"text"'])
def test_tdx_policy_that_is_not_a_json_object_is_a_clear_reason(
    pki: Pki, tdx_anchors: Anchors, policy: bytes
) -> None:
    verdict = appraise(
        tdx_signer.sign_quote(pki), anchors=tdx_anchors, now=tdx_signer.NOW, policy=policy
    )

    assert not verdict.verified
    assert verdict.platform == TDX
    assert verdict.reason.startswith("the attestation policy is not valid: ")
    assert verdict.evidence is None


def test_non_json_policy_reasons_say_what_is_wrong(
    vcek: Endorsement, snp_anchors: Anchors, pki: Pki, tdx_anchors: Anchors
) -> None:
    snp = appraise(
        _snp(SPEC, vcek),
        anchors=snp_anchors,
        now=snp_signer.NOW,
        policy=b"measurement: abc",
        endorsement=vcek.der,
    )
    tdx = appraise(
        tdx_signer.sign_quote(pki), anchors=tdx_anchors, now=tdx_signer.NOW, policy=b"mr_td: abc"
    )

    assert "not JSON" in snp.reason
    assert "not valid JSON" in tdx.reason


def test_an_empty_policy_document_is_not_no_policy(vcek: Endorsement, snp_anchors: Anchors) -> None:
    verdict = appraise(
        _snp(SPEC, vcek), anchors=snp_anchors, now=snp_signer.NOW, policy=b"", endorsement=vcek.der
    )

    assert not verdict.verified
    assert verdict.reason.startswith("the attestation policy is not valid")


# --- pinned_policy --------------------------------------------------------------------------


def _evidence(verdict: Verdict) -> Verified:
    assert verdict.verified, verdict.reason
    assert verdict.evidence is not None
    return verdict.evidence


def test_pinned_snp_policy_passes_the_same_evidence_and_fails_another_measurement(
    vcek: Endorsement, snp_anchors: Anchors
) -> None:
    raw = _snp(SPEC.replace(host_data=b"\x11" * 32, family_id=b"\x22" * 16), vcek)
    first = _evidence(appraise(raw, anchors=snp_anchors, now=snp_signer.NOW, endorsement=vcek.der))

    pinned = pinned_policy(first)
    again = appraise(
        raw, anchors=snp_anchors, now=snp_signer.NOW, policy=pinned, endorsement=vcek.der
    )
    other = appraise(
        _snp(
            SPEC.replace(
                host_data=b"\x11" * 32, family_id=b"\x22" * 16, measurement=OTHER_MEASUREMENT
            ),
            vcek,
        ),
        anchors=snp_anchors,
        now=snp_signer.NOW,
        policy=pinned,
        endorsement=vcek.der,
    )

    document = json.loads(pinned)
    assert document["policy"]["measurement"] == _b64(SPEC.measurement)
    assert document["policy"]["host_data"] == _b64(b"\x11" * 32)
    assert document["policy"]["family_id"] == _b64(b"\x22" * 16)
    assert document["policy"]["policy"] == SPEC.policy
    assert document["root_of_trust"] == {"product_line": "Milan"}
    assert again.verified, again.reason
    assert not other.verified
    assert other.failures == (
        CheckFailure("measurement", SPEC.measurement.hex(), OTHER_MEASUREMENT.hex()),
    )


def test_pinned_snp_policy_fails_other_host_data_and_a_debug_guest(
    vcek: Endorsement, snp_anchors: Anchors
) -> None:
    pinned = pinned_policy(
        _evidence(
            appraise(
                _snp(SPEC, vcek), anchors=snp_anchors, now=snp_signer.NOW, endorsement=vcek.der
            )
        )
    )
    changed = _snp(SPEC.replace(host_data=b"\x01" * 32, policy=SPEC.policy | 1 << 19), vcek)

    verdict = appraise(
        changed, anchors=snp_anchors, now=snp_signer.NOW, policy=pinned, endorsement=vcek.der
    )

    assert {f.field for f in verdict.failures} == {"host_data", "policy.debug"}


def test_pinned_policy_of_the_real_snp_sample_passes_it() -> None:
    first = _evidence(
        appraise(samples.REPORT, anchors=BUNDLED, now=samples.NOW, endorsement=samples.VCEK)
    )

    verdict = appraise(
        samples.REPORT,
        anchors=BUNDLED,
        now=samples.NOW,
        policy=pinned_policy(first),
        endorsement=samples.VCEK,
    )

    assert verdict.verified, verdict.reason


def test_pinned_tdx_policy_passes_the_same_evidence_and_fails_another_measurement(
    pki: Pki, tdx_anchors: Anchors
) -> None:
    fields = QuoteFields()
    raw = tdx_signer.sign_quote(pki, fields)
    first = _evidence(appraise(raw, anchors=tdx_anchors, now=tdx_signer.NOW))

    pinned = pinned_policy(first)
    again = appraise(raw, anchors=tdx_anchors, now=tdx_signer.NOW, policy=pinned)
    # A fresh signature over the same fields: still the same TD.
    resigned = appraise(
        tdx_signer.sign_quote(pki, fields), anchors=tdx_anchors, now=tdx_signer.NOW, policy=pinned
    )
    other = appraise(
        tdx_signer.sign_quote(pki, fields.but(mr_td=OTHER_MEASUREMENT)),
        anchors=tdx_anchors,
        now=tdx_signer.NOW,
        policy=pinned,
    )

    body = json.loads(pinned)["policy"]["td_quote_body_policy"]
    assert body == {
        "mr_td": _b64(fields.mr_td),
        "mr_config_id": _b64(fields.mr_config_id),
        "mr_owner": _b64(fields.mr_owner),
        "mr_owner_config": _b64(fields.mr_owner_config),
        "td_attributes": _b64(fields.td_attributes),
        "xfam": _b64(fields.xfam),
    }
    assert again.verified, again.reason
    assert resigned.verified, resigned.reason
    assert not other.verified
    assert other.failures == (CheckFailure("mr_td", fields.mr_td.hex(), OTHER_MEASUREMENT.hex()),)


def test_pinned_tdx_policy_fails_another_owner(pki: Pki, tdx_anchors: Anchors) -> None:
    fields = QuoteFields()
    pinned = pinned_policy(
        _evidence(
            appraise(tdx_signer.sign_quote(pki, fields), anchors=tdx_anchors, now=tdx_signer.NOW)
        )
    )

    verdict = appraise(
        tdx_signer.sign_quote(pki, fields.but(mr_owner=b"\x01" * 48)),
        anchors=tdx_anchors,
        now=tdx_signer.NOW,
        policy=pinned,
    )

    assert verdict.failures == (CheckFailure("mr_owner", fields.mr_owner.hex(), "01" * 48),)


@pytest.mark.parametrize(
    ("quote", "now"),
    [(vectors.quote_v4(), vectors.V4_NOW), (vectors.quote_v5(), vectors.V5_NOW)],
    ids=["v4", "v5"],
)
def test_pinned_policy_of_the_real_tdx_samples_passes_them(quote: bytes, now: datetime) -> None:
    first = _evidence(appraise(quote, anchors=BUNDLED, now=now))

    verdict = appraise(quote, anchors=BUNDLED, now=now, policy=pinned_policy(first))

    assert verdict.verified, verdict.reason


def test_pinned_tdx_policy_refuses_a_debug_td(pki: Pki, tdx_anchors: Anchors) -> None:
    fields = QuoteFields()
    pinned = pinned_policy(
        _evidence(
            appraise(tdx_signer.sign_quote(pki, fields), anchors=tdx_anchors, now=tdx_signer.NOW)
        )
    )
    debug_attributes = bytes([fields.td_attributes[0] | 0x01]) + fields.td_attributes[1:]

    verdict = appraise(
        tdx_signer.sign_quote(pki, fields.but(td_attributes=debug_attributes)),
        anchors=tdx_anchors,
        now=tdx_signer.NOW,
        policy=pinned,
    )

    assert verdict.evidence is not None
    assert verdict.evidence.claims["debug"] is True
    assert not verdict.verified
