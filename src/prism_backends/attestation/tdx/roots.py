"""Intel's SGX root CA, bundled with the package (the one I/O of this package,
kept apart so that :mod:`.verify` stays pure).

The certificate is Intel's public "Intel SGX Root CA" (ECDSA P-256, serial
22650cd6..., valid 2018-05-21 to 2049-12-31), the same certificate that ends
every PCK chain and that go-tdx-guest embeds (``verify/trusted_root.pem``).
"""

from __future__ import annotations

from importlib import resources

from cryptography import x509

_PACKAGE = "prism_backends.attestation.tdx"
_ROOT_FILE = "roots/intel-sgx-root-ca.pem"


def bundled_roots() -> list[x509.Certificate]:
    """The bundled trusted roots for TDX quotes: Intel's SGX root CA."""
    data = resources.files(_PACKAGE).joinpath(_ROOT_FILE).read_bytes()
    return x509.load_pem_x509_certificates(data)
