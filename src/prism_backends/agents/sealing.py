"""Private keys at rest: AES-256-GCM under a key-encryption key.

The key-encryption key comes from configuration (base64 of 32 bytes) or, in
the embedded default, from a file in the data directory created on first use.
The CVM id is bound as associated data, so a sealed key cannot be moved to
another CVM's row.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from prism_backends.agents.pki import creation_lock, write_private

KEK_FILE = "agents-kek.bin"
NONCE_BYTES = 12
VERSION = b"\x01"


class SealingError(ValueError):
    """A sealed blob cannot be opened: wrong key, wrong CVM or tampered."""


class Sealer:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the key-encryption key must be 32 bytes")
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, *, bound_to: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return VERSION + nonce + self._aead.encrypt(nonce, plaintext, bound_to.encode())

    def open(self, sealed: bytes, *, bound_to: str) -> bytes:
        if not sealed.startswith(VERSION) or len(sealed) < 1 + NONCE_BYTES + 16:
            raise SealingError("not a sealed blob of a known version")
        nonce, ciphertext = sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, ciphertext, bound_to.encode())
        except Exception as exc:  # InvalidTag: say nothing about the content
            raise SealingError("the sealed key cannot be opened with this key") from exc


def sealer_from(configured: str | None, data_dir: Path) -> Sealer:
    if configured:
        try:
            return Sealer(base64.b64decode(configured, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise ValueError("agents_key_encryption_key must be base64 of 32 bytes") from exc
    path = data_dir / KEK_FILE
    with creation_lock(data_dir):
        if not path.exists():
            write_private(path, os.urandom(32))
        return Sealer(path.read_bytes())
