"""The embedded issuer's Ed25519 signing key, kept in the data directory."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from prism_backends.datadir import prepare_data_dir

KEY_FILE = "issuer-ed25519.pem"


def load_or_create_issuer_key(data_dir: Path) -> Ed25519PrivateKey:
    """Read the key, creating it (mode 0600) on first use."""
    path = data_dir / KEY_FILE
    if not path.exists():
        prepare_data_dir(data_dir)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            # Another process created it first; use theirs.
            return load_issuer_key(path)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        return key
    return load_issuer_key(path)


def load_issuer_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return key


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jwk = {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}
    # RFC 7638 thumbprint: the canonical JSON of the required members.
    thumbprint = hashlib.sha256(json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode())
    return {**jwk, "kid": _b64url(thumbprint.digest()), "alg": "EdDSA", "use": "sig"}


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
