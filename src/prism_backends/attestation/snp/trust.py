"""Trusted AMD roots per product, and certificate loading.

A product's roots are its ARK (AMD Root Key, self-signed) and the two keys the
ARK certifies: the ASK (signs VCEKs) and the ASVK (signs VLEKs). AMD's KDS
publishes them as ``cert_chain`` PEM bundles, ASK or ASVK first, then ARK.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning

from prism_backends.attestation.common import ChainInvalid
from prism_backends.attestation.snp.abi import PRODUCTS


def _quietly(load: str, data: bytes) -> list[x509.Certificate]:
    # AMD's KDS issues VCEKs with serial number 0; cryptography accepts them but
    # warns (RFC 5280 wants positive serials). The chain is checked by hand, the
    # serial plays no part, so the warning is silenced for this load only.
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message="Parsed a serial number which wasn't positive",
            category=CryptographyDeprecationWarning,
        )
        if load == "pem":
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]


def load_certificate(data: bytes, role: str = "certificate") -> x509.Certificate:
    """Load one X.509 certificate from DER or PEM; ChainInvalid when it is neither."""
    data = bytes(data)
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            certs = _quietly("pem", data)
            if len(certs) != 1:
                raise ChainInvalid(f"{role}: expected one PEM certificate, found {len(certs)}")
            return certs[0]
        return _quietly("der", data)[0]
    except ValueError as exc:
        raise ChainInvalid(f"{role} is not a DER or PEM X.509 certificate: {exc}") from exc


def load_certificates(pem: bytes, role: str = "certificate bundle") -> list[x509.Certificate]:
    """Load every certificate of a PEM bundle, in order."""
    try:
        return _quietly("pem", bytes(pem))
    except ValueError as exc:
        raise ChainInvalid(f"{role} is not a PEM certificate bundle: {exc}") from exc


@dataclass(frozen=True)
class ProductRoots:
    """The AMD keys trusted for one product line. ``ark`` is the trust anchor;
    ``ask``/``asvk`` are used when the evidence does not carry its own."""

    product: str
    ark: x509.Certificate
    ask: x509.Certificate | None = None
    asvk: x509.Certificate | None = None


def product_roots_from_pem(
    product: str, vcek_bundle: bytes | None = None, vlek_bundle: bytes | None = None
) -> ProductRoots:
    """Build a product's roots from KDS ``cert_chain`` bundles (ASK then ARK, and
    ASVK then ARK). Both bundles must name the same ARK. Only parses: the
    signatures are checked when evidence is verified."""
    if product not in PRODUCTS:
        raise ValueError(f"unknown SEV-SNP product {product!r}; expected one of {PRODUCTS}")
    arks: list[x509.Certificate] = []
    ask = asvk = None
    for name, bundle in (("VCEK", vcek_bundle), ("VLEK", vlek_bundle)):
        if bundle is None:
            continue
        certs = load_certificates(bundle, f"{product} {name} root bundle")
        if len(certs) != 2:
            raise ChainInvalid(
                f"{product} {name} root bundle holds {len(certs)} certificates, expected 2 "
                "(AS[V]K then ARK)"
            )
        if name == "VCEK":
            ask = certs[0]
        else:
            asvk = certs[0]
        arks.append(certs[1])
    if not arks:
        raise ValueError("give at least one of vcek_bundle, vlek_bundle")
    if any(a != arks[0] for a in arks):
        raise ChainInvalid(f"{product} root bundles name different ARKs")
    return ProductRoots(product=product, ark=arks[0], ask=ask, asvk=asvk)
