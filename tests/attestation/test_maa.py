"""Azure Attestation signing keys: MAA's JWKS carries certificates only (x5c),
read here from a file's document and from a loopback JWKS URL."""

from __future__ import annotations

import base64
import json
import threading
import urllib.error
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from prism_backends.attestation.maa import RemoteJwks, jwks_keys

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def certificate_jwk(kid: str) -> dict[str, Any]:
    """A key as MAA publishes it: kid, kty and a self-signed certificate, no n/e."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "https://maa.example")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(KEY.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(KEY, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    return {"kid": kid, "kty": "RSA", "x5c": [base64.b64encode(der).decode()]}


@pytest.fixture
def jwks_server() -> Iterator[tuple[dict[str, Any], list[str], str]]:
    document: dict[str, Any] = {"keys": [certificate_jwk("k1")]}
    fetched: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_GET(self) -> None:
            fetched.append(self.path)
            data = json.dumps(document).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield document, fetched, f"http://127.0.0.1:{server.server_address[1]}/certs"
    finally:
        server.shutdown()
        server.server_close()


def test_certificate_only_keys_verify_tokens() -> None:
    token = jwt.encode({"x-ms-attestation-type": "sevsnpvm"}, KEY, "RS256", headers={"kid": "k1"})
    keys = jwks_keys({"keys": [certificate_jwk("k1"), "not a key"]})
    assert jwt.decode(token, keys["k1"], algorithms=["RS256"])["x-ms-attestation-type"] == (
        "sevsnpvm"
    )


def test_the_url_is_fetched_once_and_again_only_for_a_new_key_at_most_once_a_minute(
    jwks_server: tuple[dict[str, Any], list[str], str],
) -> None:
    document, fetched, url = jwks_server
    remote = RemoteJwks(url)
    assert remote.key("k1") is not None
    assert remote.key("k1") is not None
    assert fetched == ["/certs"]
    document["keys"].append(certificate_jwk("k2"))
    assert remote.key("k2") is None  # fetched a moment ago: not again yet
    remote._fetched_at -= RemoteJwks.REFETCH_SECONDS
    assert remote.key("k2") is not None
    assert len(fetched) == 2


def test_an_unreachable_url_raises_os_error_and_a_bad_scheme_is_refused() -> None:
    with pytest.raises(urllib.error.URLError):
        RemoteJwks("http://127.0.0.1:9/certs", timeout=2).key("k1")
    with pytest.raises(ValueError, match="http"):
        RemoteJwks("file:///etc/passwd")
