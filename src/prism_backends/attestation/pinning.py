"""Trust on first use: a policy pinned from the first verified evidence (pure).

Only where configuration allows it: the pinned policy says "this CVM must keep
booting what it booted the first time", which is weaker than reference values
from whoever built the image.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from prism_backends.attestation.common import Verified


def pinned_policy(evidence: Verified) -> bytes:
    """A go-sev-guest ``check.Config`` or go-tdx-guest ``checkconfig.Config``
    (snake_case, bytes as base64) requiring what ``evidence`` showed."""
    claims = evidence.claims
    document: dict[str, Any]
    if evidence.platform == "sev-snp":
        document = {
            "policy": {
                "measurement": _b64(evidence.measurement),
                "policy": int(claims["policy"]),
                "host_data": _b64(str(claims["host_data"])),
                "family_id": _b64(str(claims["family_id"])),
                "image_id": _b64(str(claims["image_id"])),
                "vmpl": int(claims["vmpl"]),
            },
            "root_of_trust": {"product_line": str(evidence.tcb.get("product", ""))},
        }
    else:
        body: dict[str, Any] = {"mr_td": _b64(evidence.measurement)}
        for name in ("mr_config_id", "mr_owner", "mr_owner_config", "td_attributes", "xfam"):
            if name in claims:
                body[name] = _b64(str(claims[name]))
        document = {"policy": {"td_quote_body_policy": body}}
    return json.dumps(document, indent=2, sort_keys=True).encode()


def _b64(hex_text: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_text)).decode()
