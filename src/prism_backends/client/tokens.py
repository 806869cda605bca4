"""The domain a bearer token is for, read from its payload without verifying
it: only to fill in the URL's domain id; the service verifies the token."""

from __future__ import annotations

import base64
import binascii
import json


def domain_claim(token: str) -> str | None:
    """The token's ``domain`` claim, or its one domain in ``domains``; None if
    the token is not a JWT or names no single domain."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(claims, dict):
        return None
    domain = claims.get("domain")
    if isinstance(domain, str) and domain:
        return domain
    domains = claims.get("domains")
    if isinstance(domains, dict) and len(domains) == 1:
        (only,) = domains
        return only if isinstance(only, str) and only else None
    return None
