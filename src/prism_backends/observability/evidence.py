"""Evidence verdicts counted by kind of reason. A refusal's reason is text
that names values (a measurement, a serial); the label is the kind it is of,
from a fixed list, so the series stay few."""

from __future__ import annotations

from prism_backends.observability.instruments import instruments

# First match wins: the words the appraisal's reasons are written with.
_KINDS = (
    ("policy", ("expected", "policy")),
    ("binding", ("report_data", "eat_nonce", "nonce", "binding", "bound")),
    ("revoked", ("revoked", "crl")),
    ("expired", ("expired", "not yet valid", "validity")),
    ("signature", ("signature",)),
    ("chain", ("certificate", "chain", "vcek", "vlek", "pck", "root")),
    ("tcb", ("tcb",)),
    ("malformed", ("malformed", "too short", "truncated", "parse", "decode", "not a", "unknown")),
)


def reason_kind(reason: str) -> str:
    lowered = reason.lower()
    for kind, words in _KINDS:
        if any(word in lowered for word in words):
            return kind
    return "other"


def count_verdict(platform: str, verified: bool, reason: str) -> None:
    outcome, kind = ("verified", "") if verified else ("refused", reason_kind(reason))
    instruments().evidence.labels(platform or "unknown", outcome, kind).inc()
