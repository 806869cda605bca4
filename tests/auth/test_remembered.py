"""A verified token is remembered for a short while, never past its expiry, and a
refused one is not remembered at all."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from prism_backends.auth.permissions import Role
from prism_backends.auth.principal import Principal
from prism_backends.auth.remembered import RememberedTokens
from prism_backends.auth.tokens import LEEWAY_SECONDS, TokenVerifier, issue_token
from prism_backends.errors import Unauthenticated

ISSUER = "prism-backends"
ALICE = Principal(subject="alice", roles_by_domain={"dom-1": Role.ADMIN})


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every token the verifier checks in full (its call of jwt.decode)."""
    seen: list[str] = []
    real = jwt.decode

    def counting(token: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(token)
        return real(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting)
    return seen


def _verifier(key: Ed25519PrivateKey, clock: Clock) -> TokenVerifier:
    return TokenVerifier(
        algorithms=["EdDSA"],
        issuer=ISSUER,
        local_keys=[key.public_key()],
        remembered=RememberedTokens(clock=clock),
    )


def _issue(key: Ed25519PrivateKey, ttl: timedelta = timedelta(hours=1)) -> str:
    return issue_token(
        key, issuer=ISSUER, domain_id="dom-1", role=Role.ADMIN, subject="alice", ttl=ttl
    )


def test_a_verified_token_is_not_checked_again_within_the_window(
    clock: Clock, decodes: list[str]
) -> None:
    key = Ed25519PrivateKey.generate()
    verifier, token = _verifier(key, clock), _issue(key)

    first = verifier.verify(token)
    clock.now += 30
    again = verifier.verify(token)

    assert again == first
    assert decodes == [token]


def test_a_remembered_token_is_checked_in_full_once_the_window_has_passed(
    clock: Clock, decodes: list[str]
) -> None:
    key = Ed25519PrivateKey.generate()
    verifier, token = _verifier(key, clock), _issue(key)

    verifier.verify(token)
    clock.now += 61
    verifier.verify(token)

    assert decodes == [token, token]


def test_a_token_is_never_taken_at_its_word_past_its_expiry(clock: Clock) -> None:
    remembered = RememberedTokens(clock=clock)
    expires = clock.now + 10

    remembered.remember("t", ALICE, valid_until=expires + LEEWAY_SECONDS)

    clock.now = expires + LEEWAY_SECONDS - 0.5
    assert remembered.get("t") == ALICE
    clock.now = expires + LEEWAY_SECONDS
    assert remembered.get("t") is None
    assert len(remembered) == 0


def test_the_verifier_remembers_a_token_only_until_its_expiry(
    clock: Clock, decodes: list[str]
) -> None:
    key = Ed25519PrivateKey.generate()
    verifier, token = _verifier(key, clock), _issue(key, ttl=timedelta(seconds=20))
    expires = jwt.decode(token, options={"verify_signature": False})["exp"]
    decodes.clear()

    verifier.verify(token)
    clock.now = expires + LEEWAY_SECONDS
    verifier.verify(token)  # still valid by the real clock, so checked and passed again

    assert decodes == [token, token]


def test_a_refused_token_is_refused_every_time(clock: Clock, decodes: list[str]) -> None:
    key = Ed25519PrivateKey.generate()
    verifier = _verifier(key, clock)
    header, _, signature = _issue(key).split(".")
    _, payload, _ = _issue(key, ttl=timedelta(hours=2)).split(".")
    spliced = f"{header}.{payload}.{signature}"  # a trusted signature over other claims

    for _ in range(2):
        with pytest.raises(Unauthenticated):
            verifier.verify(spliced)

    assert decodes == [spliced, spliced]


def test_the_oldest_tokens_make_room_for_new_ones(clock: Clock) -> None:
    remembered = RememberedTokens(capacity=3, clock=clock)

    for name in "abcde":
        remembered.remember(name, ALICE, valid_until=clock.now + 100)

    assert len(remembered) == 3
    assert [remembered.get(name) for name in "abcde"] == [None, None, ALICE, ALICE, ALICE]
