"""Tokens already verified, remembered for a short while (pure: the clock is given).

A client sends the same bearer token with every request for the token's life,
and checking its EdDSA signature and claims again each time was a sixth of a
view's CPU (bench/README.md). A token verified once is taken at its word until
the sooner of its own expiry (with the verifier's leeway) and ``REMEMBER_SECONDS``
from its verification: the second bound keeps a key withdrawn from the JWKS, or a
changed configuration, from being trusted for longer than PyJWT's own key cache
would trust it. Only tokens that passed every check are remembered; a refused
token is checked in full each time it comes back.

Keyed by the token's text itself: the dict compares a candidate against a stored
token only when their (per-process, randomised) hashes collide, which tells an
attacker nothing about a signature they do not hold.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from prism_backends.auth.principal import Principal

REMEMBER_SECONDS = 60.0
MAX_REMEMBERED = 4096  # distinct live tokens: the clients of one replica, with room


class RememberedTokens:
    def __init__(
        self,
        *,
        seconds: float = REMEMBER_SECONDS,
        capacity: int = MAX_REMEMBERED,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._seconds = seconds
        self._capacity = capacity
        self._clock = clock
        self._lock = threading.Lock()
        # token -> (principal, until): dicts keep insertion order, so the first
        # entry is the oldest, the one to drop when full.
        self._entries: dict[str, tuple[Principal, float]] = {}

    def get(self, token: str) -> Principal | None:
        """The principal of a token verified before, if it may still be trusted."""
        entry = self._entries.get(token)
        if entry is None:
            return None
        principal, until = entry
        if self._clock() < until:
            return principal
        with self._lock:
            self._entries.pop(token, None)
        return None

    def remember(self, token: str, principal: Principal, *, valid_until: float) -> None:
        """Remember a token that passed every check, which it does until ``valid_until``."""
        until = min(valid_until, self._clock() + self._seconds)
        with self._lock:
            while len(self._entries) >= self._capacity:
                del self._entries[next(iter(self._entries))]
            self._entries[token] = (principal, until)

    def __len__(self) -> int:
        return len(self._entries)
