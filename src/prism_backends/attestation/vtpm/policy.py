"""PCR reference values, as Cocos' attestation policy carries them beside
go-sev-guest's ``check.Config``: ``{"pcr_values": {"sha256": {"15": "<hex>"},
"sha384": {...}}}``. Pure."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from prism_backends.attestation.common import CheckFailure, PolicyError

BANKS = ("sha1", "sha256", "sha384", "sha512")
SIZES = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}

PcrValues = Mapping[str, Mapping[int, bytes]]


def parse_pcr_values(document: bytes | None) -> dict[str, dict[int, bytes]]:
    """The policy's ``pcr_values`` (empty when the policy has none)."""
    if not document:
        return {}
    try:
        parsed: Any = json.loads(document)
    except ValueError as exc:
        raise PolicyError(f"the policy document is not JSON: {exc}") from exc
    raw = parsed.get("pcr_values") if isinstance(parsed, dict) else None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise PolicyError("pcr_values must be an object of banks (sha256, sha384, ...)")
    values: dict[str, dict[int, bytes]] = {}
    for bank, pcrs in raw.items():
        if bank not in BANKS:
            raise PolicyError(f"pcr_values.{bank}: not a bank ({', '.join(BANKS)})")
        if pcrs is None:
            continue
        if not isinstance(pcrs, dict):
            raise PolicyError(f"pcr_values.{bank} must map PCR indices to hex values")
        for index, value in pcrs.items():
            where = f"pcr_values.{bank}.{index}"
            if not (isinstance(index, str) and index.isdigit() and int(index) < 24):
                raise PolicyError(f"{where}: a PCR index is 0 to 23")
            try:
                digest = bytes.fromhex(value) if isinstance(value, str) else b""
            except ValueError:
                digest = b""
            if len(digest) != SIZES[bank]:
                raise PolicyError(f"{where}: expected {SIZES[bank]} bytes of hex")
            values.setdefault(bank, {})[int(index)] = digest
    return values


def check_pcrs(expected: PcrValues, actual: PcrValues) -> list[CheckFailure]:
    """One failure per PCR the policy names whose quoted value differs (or was not quoted)."""
    failures = []
    for bank, pcrs in sorted(expected.items()):
        for index, want in sorted(pcrs.items()):
            got = actual.get(bank, {}).get(index)
            if got != want:
                failures.append(
                    CheckFailure(
                        f"pcr_values.{bank}.{index}",
                        want.hex(),
                        got.hex() if got else "(not quoted)",
                    )
                )
    return failures


def checked_names(expected: PcrValues) -> list[str]:
    """The PCRs a policy checks, as tokens name them: ``sha256:15``."""
    return [f"{bank}:{index}" for bank, pcrs in sorted(expected.items()) for index in sorted(pcrs)]
