"""The real TDX vectors in ``testdata/`` (see its README) and their clocks."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from prism_backends.attestation.tdx.pcs import Collateral

TESTDATA = Path(__file__).parent / "testdata"
# go-tdx-guest pins its clock here: the v4 chain and the collateral are valid.
V4_NOW = datetime(2023, 7, 1, 1, 0, tzinfo=UTC)
# The v5 sample's PCK certificate is valid 2026-01-27 .. 2033-01-27 (its CA
# until 2033-05-21).
V5_NOW = datetime(2026, 6, 1, tzinfo=UTC)


def read(name: str) -> bytes:
    return (TESTDATA / name).read_bytes()


def quote_v4() -> bytes:
    return read("spr-e4-quote-v4.dat")


def quote_v5() -> bytes:
    return read("quote-v5-sample.dat")


def intel_root() -> x509.Certificate:
    return x509.load_pem_x509_certificate(read("intel-sgx-root-ca.pem"))


def collateral_v4() -> Collateral:
    """Intel's collateral for the v4 quote's platform (current on 2023-07-01)."""
    chain = read("collateral/tcb-signing-issuer-chain.txt").strip()
    return Collateral(
        tcb_info=read("collateral/sample_tcbInfo_response"),
        tcb_info_issuer_chain=chain,
        qe_identity=read("collateral/sample_qeIdentity_response"),
        qe_identity_issuer_chain=chain,
        pck_crl=read("collateral/pckcrl"),
        root_crl=read("collateral/rootcrl.der"),
    )
