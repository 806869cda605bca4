"""AMD's published SEV-SNP root certificates, shipped as package data.

The PEM files under ``roots/`` are AMD's KDS ``cert_chain`` bundles
(https://kdsintf.amd.com/{vcek,vlek}/v1/{Milan,Genoa,Turin}/cert_chain): ASK or
ASVK first, then the ARK. Reading them is this module's only I/O; everything
else takes roots as a parameter.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from importlib import resources
from types import MappingProxyType

from prism_backends.attestation.snp.abi import GENOA, MILAN, TURIN
from prism_backends.attestation.snp.trust import ProductRoots, product_roots_from_pem

_BUNDLES = {
    MILAN: ("ask_ark_milan.pem", "ask_ark_milan_vlek.pem"),
    GENOA: ("ask_ark_genoa.pem", "ask_ark_genoa_vlek.pem"),
    TURIN: ("ask_ark_turin_vcek.pem", "ask_ark_turin_vlek.pem"),
}


def _read(name: str) -> bytes:
    return (resources.files("prism_backends.attestation.snp") / "roots" / name).read_bytes()


@functools.cache
def bundled_roots() -> Mapping[str, ProductRoots]:
    """AMD's ARK, ASK and ASVK for Milan, Genoa and Turin, keyed by product line
    (read once, then cached; the mapping is read-only)."""
    return MappingProxyType(
        {
            product: product_roots_from_pem(product, _read(vcek), _read(vlek))
            for product, (vcek, vlek) in _BUNDLES.items()
        }
    )
