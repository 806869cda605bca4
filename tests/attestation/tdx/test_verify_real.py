"""Verifying Intel's real quotes, with and without Intel's real collateral."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime

import pytest

from prism_backends.attestation.common import (
    ChainInvalid,
    CollateralUnavailable,
    SignatureInvalid,
)
from prism_backends.attestation.tdx.roots import bundled_roots
from prism_backends.attestation.tdx.verify import verify
from tests.attestation.tdx import signer, vectors

V4_MR_TD = (
    "6363b8043668a3ad953278e10389574d326c6749fb78aa810ecd9336923db86f"
    "22fc00b8dcd404bc10d5e119d7215cbb"
)


def test_the_bundled_root_is_intels() -> None:
    assert bundled_roots() == [vectors.intel_root()]


def test_real_v4_quote_verifies_at_go_tdx_guests_clock() -> None:
    result = verify(vectors.quote_v4(), trusted_roots=bundled_roots(), now=vectors.V4_NOW)

    assert result.verified.platform == "tdx"
    assert result.verified.measurement == V4_MR_TD
    assert result.verified.report_data == result.quote.body.report_data
    assert result.verified.tcb["fmspc"] == "50806f000000"
    assert result.verified.tcb["pck_pce_svn"] == 11
    assert result.verified.tcb["pck_cpu_svn"] == "03030202020100020000000000000000"
    assert result.verified.claims["tdx_version"] == "1.0"
    assert result.verified.claims["debug"] is False
    assert result.pck.ppid.hex() == "089ddfdb9c0359c82a3bc7719239574e"
    assert result.tcb is None  # no collateral asked for


def test_real_v5_quote_verifies_within_its_certificates_validity() -> None:
    result = verify(vectors.quote_v5(), trusted_roots=bundled_roots(), now=vectors.V5_NOW)

    assert result.quote.version == 5
    assert result.verified.claims["tdx_version"] == "1.5"
    assert result.verified.measurement == result.quote.body.mr_td.hex()
    assert result.verified.tcb["fmspc"] == "90c06f000000"
    assert "mr_service_td" in result.verified.claims


def test_real_v5_quote_is_refused_before_its_pck_certificate_is_valid() -> None:
    # The sample's PCK certificate was issued on 2026-01-27: go-tdx-guest's
    # 2023 clock is too early for it.
    with pytest.raises(ChainInvalid, match="not valid before 2026-01-27"):
        verify(vectors.quote_v5(), trusted_roots=bundled_roots(), now=vectors.V4_NOW)


def test_real_v4_quote_is_refused_once_its_pck_certificate_expired() -> None:
    with pytest.raises(ChainInvalid, match="expired at 2029-09-20"):
        verify(
            vectors.quote_v4(),
            trusted_roots=bundled_roots(),
            now=datetime(2053, 7, 1, tzinfo=UTC),
        )


def test_a_chain_remembered_as_good_is_still_refused_once_expired() -> None:
    """What is remembered per chain does not depend on the time; validity does."""
    verify(vectors.quote_v4(), trusted_roots=bundled_roots(), now=vectors.V4_NOW)
    with pytest.raises(ChainInvalid, match="expired at 2029-09-20"):
        verify(
            vectors.quote_v4(),
            trusted_roots=bundled_roots(),
            now=datetime(2053, 7, 1, tzinfo=UTC),
        )
    verify(vectors.quote_v4(), trusted_roots=bundled_roots(), now=vectors.V4_NOW)


def test_a_chain_refused_once_is_refused_again_from_memory() -> None:
    """An untrusted root is refused each time, not only on the first quote."""
    other_root = signer.make_root().cert
    for _ in range(2):
        with pytest.raises(ChainInvalid, match="which is not trusted"):
            verify(vectors.quote_v4(), trusted_roots=[other_root], now=vectors.V4_NOW)


def test_now_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        verify(vectors.quote_v4(), trusted_roots=bundled_roots(), now=datetime(2023, 7, 1))


def test_real_v4_quote_with_intels_collateral_reports_its_tcb_status() -> None:
    result = verify(
        vectors.quote_v4(),
        trusted_roots=bundled_roots(),
        now=vectors.V4_NOW,
        collateral=vectors.collateral_v4(),
    )

    assert result.tcb is not None
    # The sample platform's SVNs (PCK CPUSVN 03030202..., TEE_TCB_SVN 030004...)
    # are below every level of this TCB info: go-tdx-guest's own test notes
    # the same. Signatures, chains, CRLs and the QE identity all check out.
    assert result.tcb.platform_status == "TcbNotSupported"
    assert result.tcb.status == "TcbNotSupported"
    assert result.tcb.qe_status == "UpToDate"
    assert result.tcb.tdx_module_status is None
    assert result.tcb.tcb_evaluation_data_number == 15
    assert result.tcb.fmspc.hex() == "50806f000000"
    assert result.verified.tcb["tcb_status"] == "TcbNotSupported"
    assert result.verified.tcb["qe_tcb_status"] == "UpToDate"


def test_intels_collateral_goes_stale() -> None:
    # The PCK CRL and the QE identity have their next update on 2023-07-08.
    with pytest.raises(CollateralUnavailable, match="stale"):
        verify(
            vectors.quote_v4(),
            trusted_roots=bundled_roots(),
            now=datetime(2023, 7, 9, tzinfo=UTC),
            collateral=vectors.collateral_v4(),
        )


def test_intels_collateral_tampered_with_does_not_verify() -> None:
    collateral = vectors.collateral_v4()
    tampered = collateral.tcb_info.replace(
        b'"tcbEvaluationDataNumber":15', b'"tcbEvaluationDataNumber":16'
    )
    assert tampered != collateral.tcb_info

    with pytest.raises(SignatureInvalid, match="TCB info signature"):
        verify(
            vectors.quote_v4(),
            trusted_roots=bundled_roots(),
            now=vectors.V4_NOW,
            collateral=dataclasses.replace(collateral, tcb_info=tampered),
        )


def test_a_tcb_info_that_is_not_json_is_refused() -> None:
    collateral = vectors.collateral_v4()
    other = collateral.pck_crl  # DER, not JSON
    with pytest.raises(CollateralUnavailable, match="TCB info is malformed"):
        verify(
            vectors.quote_v4(),
            trusted_roots=bundled_roots(),
            now=vectors.V4_NOW,
            collateral=dataclasses.replace(collateral, tcb_info=other),
        )


PCS = "https://api.trustedservices.intel.com"


class RecordedPcs:
    """Intel PCS as go-tdx-guest's test getter records it, by URL."""

    def __init__(self) -> None:
        collateral = vectors.collateral_v4()
        chain = collateral.tcb_info_issuer_chain.decode()
        self.calls: list[str] = []
        self.responses: dict[str, tuple[dict[str, str], bytes]] = {
            f"{PCS}/tdx/certification/v4/tcb?fmspc=50806f000000": (
                {"TCB-Info-Issuer-Chain": chain},
                collateral.tcb_info,
            ),
            f"{PCS}/tdx/certification/v4/qe/identity": (
                {"sgx-enclave-identity-issuer-chain": chain},
                collateral.qe_identity,
            ),
            f"{PCS}/sgx/certification/v4/pckcrl?ca=platform&encoding=der": (
                {},
                collateral.pck_crl,
            ),
            "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der": (
                {},
                collateral.root_crl,
            ),
        }

    def get_with_headers(self, url: str) -> tuple[Mapping[str, str], bytes]:
        self.calls.append(url)
        if url not in self.responses:
            raise LookupError(f"404: {url}")
        return self.responses[url]

    def get(self, url: str) -> bytes:
        return self.get_with_headers(url)[1]


def test_collateral_is_fetched_from_intel_pcs_when_asked() -> None:
    pcs = RecordedPcs()

    result = verify(
        vectors.quote_v4(), trusted_roots=bundled_roots(), now=vectors.V4_NOW, fetcher=pcs
    )

    assert result.tcb is not None and result.tcb.qe_status == "UpToDate"
    assert sorted(pcs.calls) == sorted(pcs.responses)


def test_given_collateral_is_not_refetched() -> None:
    pcs = RecordedPcs()

    verify(
        vectors.quote_v4(),
        trusted_roots=bundled_roots(),
        now=vectors.V4_NOW,
        collateral=vectors.collateral_v4(),
        fetcher=pcs,
    )

    assert pcs.calls == []


def test_an_unreachable_pcs_is_collateral_unavailable() -> None:
    pcs = RecordedPcs()
    del pcs.responses[f"{PCS}/tdx/certification/v4/qe/identity"]

    with pytest.raises(CollateralUnavailable, match=r"could not fetch .*qe/identity"):
        verify(vectors.quote_v4(), trusted_roots=bundled_roots(), now=vectors.V4_NOW, fetcher=pcs)


class BodiesOnly:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def get(self, url: str) -> bytes:
        self.calls.append(url)
        return b""


def test_a_fetcher_without_headers_cannot_fetch_signed_collateral() -> None:
    fetcher = BodiesOnly()

    with pytest.raises(CollateralUnavailable, match="response header"):
        verify(
            vectors.quote_v4(), trusted_roots=bundled_roots(), now=vectors.V4_NOW, fetcher=fetcher
        )
    assert fetcher.calls == []
