"""Azure Attestation (MAA) signing keys: from a JWKS file or fetched from the
provider's JWKS URL. MAA publishes its keys as certificates only (``x5c``)."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.request
from typing import Any

import jwt
from cryptography import x509


def jwks_keys(document: dict[str, Any]) -> dict[str | None, Any]:
    """The public keys of a JWKS by key id. MAA publishes its keys as
    certificates only (``x5c``, no ``n``/``e``): those are read from the certificate."""
    found: dict[str | None, Any] = {}
    for jwk in document.get("keys", []):
        if not isinstance(jwk, dict):
            continue
        if "n" in jwk or "x" in jwk or "k" in jwk:
            parsed = jwt.PyJWK(jwk)
            found[parsed.key_id] = parsed.key
        elif jwk.get("x5c"):
            der = base64.b64decode(jwk["x5c"][0])
            found[jwk.get("kid")] = x509.load_der_x509_certificate(der).public_key()
    return found


class RemoteJwks:
    """A JWKS at a URL, fetched when a token names a key not seen yet (MAA
    rotates its keys), at most once a minute."""

    REFETCH_SECONDS = 60.0

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        if not url.startswith(("https://", "http://")):
            raise ValueError(f"azure_attestation_jwks_url must be an http(s) URL, not {url!r}")
        self._url = url
        self._timeout = timeout
        self._keys: dict[str | None, Any] = {}
        self._fetched_at = -self.REFETCH_SECONDS
        self._lock = threading.Lock()

    def key(self, kid: str | None) -> Any:
        with self._lock:
            if (
                kid not in self._keys
                and time.monotonic() - self._fetched_at >= self.REFETCH_SECONDS
            ):
                self._fetched_at = time.monotonic()
                self._keys = jwks_keys(self._fetch())
            return self._keys.get(kid)

    def _fetch(self) -> dict[str, Any]:
        # The scheme is checked above: http(s) only.
        request = urllib.request.Request(self._url, headers={"Accept": "application/json"})  # noqa: S310
        with urllib.request.urlopen(request, timeout=self._timeout) as response:  # noqa: S310
            document = json.loads(response.read())
        return document if isinstance(document, dict) else {}
