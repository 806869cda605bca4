"""One-time sign-in codes, as Jupyter's start-up link: ``serve`` mints one and
prints the console's URL with it; the console trades it, once, for a token.

Kept in this process's memory only, hashed, for a few minutes: a code is a
bearer secret, so it is never logged and never stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable

CODE_TTL_SECONDS = 600.0


class SignInCodes:
    def __init__(
        self, ttl_seconds: float = CODE_TTL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._expiry_by_digest: dict[bytes, float] = {}

    def mint(self) -> str:
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._drop_expired()
            self._expiry_by_digest[_digest(code)] = self._clock() + self._ttl
        return code

    def redeem(self, code: str) -> bool:
        """True once for a code minted here within its lifetime; False ever after."""
        presented = _digest(code)
        with self._lock:
            self._drop_expired()
            # Constant-time comparison against each live code: there are one or two.
            for digest in list(self._expiry_by_digest):
                if hmac.compare_digest(digest, presented):
                    del self._expiry_by_digest[digest]
                    return True
        return False

    def _drop_expired(self) -> None:
        now = self._clock()
        for digest, expiry in list(self._expiry_by_digest.items()):
            if expiry <= now:
                del self._expiry_by_digest[digest]


def _digest(code: str) -> bytes:
    return hashlib.sha256(code.encode("utf-8", "surrogatepass")).digest()
