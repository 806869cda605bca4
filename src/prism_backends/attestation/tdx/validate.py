"""Check a TDX quote's fields against a policy (go-tdx-guest ``validate``).

Every check runs; each failure is a :class:`CheckFailure` naming the quote
field, what the policy expects and what the quote has (bytes as lower-case
hex, in the quote's byte order; SVNs as decimal). Beyond the policy, as
go-tdx-guest does, XFAM and TD_ATTRIBUTES must respect TDX's fixed bits.

Validation says nothing about authenticity: run it on a quote that
:func:`~prism_backends.attestation.tdx.verify.verify` accepted.
"""

from __future__ import annotations

from prism_backends.attestation.common import CheckFailure
from prism_backends.attestation.tdx.abi import Quote
from prism_backends.attestation.tdx.policy import Policy

# If a bit is 1 in FIXED1 it must be 1; if it is 0 in FIXED0 it must be 0.
XFAM_FIXED1 = 0x00000003
XFAM_FIXED0 = 0x0006DBE7
TD_ATTRIBUTES_FIXED1 = 0x0
# DEBUG (0), SEPT_VE_DISABLE (28), PKS (30), PERFMON (63)
TD_ATTRIBUTES_FIXED0 = 0x1 | 1 << 28 | 1 << 30 | 1 << 63
TD_ATTRIBUTES_DEBUG = 0x1


def validate(quote: Quote, policy: Policy) -> list[CheckFailure]:
    """All the ways ``quote`` falls short of ``policy``; empty when it meets it."""
    failures: list[CheckFailure] = []
    header, body = quote.header, quote.body
    header_policy, body_policy = policy.header_policy, policy.td_quote_body_policy

    _minimum(failures, "qe_svn", header.qe_svn, header_policy.minimum_qe_svn)
    _minimum(failures, "pce_svn", header.pce_svn, header_policy.minimum_pce_svn)
    _exact(failures, "qe_vendor_id", header.qe_vendor_id, header_policy.qe_vendor_id)

    _svn_minimum(failures, "tee_tcb_svn", body.tee_tcb_svn, body_policy.minimum_tee_tcb_svn)
    _exact(failures, "mr_seam", body.mr_seam, body_policy.mr_seam)
    _exact(failures, "td_attributes", body.td_attributes, body_policy.td_attributes)
    _exact(failures, "xfam", body.xfam, body_policy.xfam)
    _exact(failures, "mr_td", body.mr_td, body_policy.mr_td)
    _exact(failures, "mr_config_id", body.mr_config_id, body_policy.mr_config_id)
    _exact(failures, "mr_owner", body.mr_owner, body_policy.mr_owner)
    _exact(failures, "mr_owner_config", body.mr_owner_config, body_policy.mr_owner_config)
    if body_policy.rtmrs is not None:
        for index, (actual, expected) in enumerate(zip(body.rtmrs, body_policy.rtmrs, strict=True)):
            _exact(failures, f"rtmr{index}", actual, expected)
    _exact(failures, "report_data", body.report_data, body_policy.report_data)
    if body_policy.any_mr_td and body.mr_td not in body_policy.any_mr_td:
        failures.append(
            CheckFailure(
                "mr_td",
                "one of " + ", ".join(value.hex() for value in body_policy.any_mr_td),
                body.mr_td.hex(),
            )
        )
    if body_policy.tdattributes_debug is not None:
        debug = bool(int.from_bytes(body.td_attributes, "little") & TD_ATTRIBUTES_DEBUG)
        if debug != body_policy.tdattributes_debug:
            failures.append(
                CheckFailure(
                    "td_attributes.debug",
                    str(body_policy.tdattributes_debug).lower(),
                    str(debug).lower(),
                )
            )
    if body_policy.minimum_tee_tcb_svn2 is not None:
        if body.tee_tcb_svn2 is None:
            failures.append(_absent("tee_tcb_svn2", ">= " + body_policy.minimum_tee_tcb_svn2.hex()))
        else:
            _svn_minimum(
                failures, "tee_tcb_svn2", body.tee_tcb_svn2, body_policy.minimum_tee_tcb_svn2
            )
    if body_policy.mr_service_td is not None:
        if body.mr_service_td is None:
            failures.append(_absent("mr_service_td", body_policy.mr_service_td.hex()))
        else:
            _exact(failures, "mr_service_td", body.mr_service_td, body_policy.mr_service_td)

    _fixed_bits(failures, "xfam", body.xfam, XFAM_FIXED1, XFAM_FIXED0)
    _fixed_bits(
        failures, "td_attributes", body.td_attributes, TD_ATTRIBUTES_FIXED1, TD_ATTRIBUTES_FIXED0
    )
    return failures


def _minimum(failures: list[CheckFailure], name: str, actual: int, minimum: int) -> None:
    if actual < minimum:
        failures.append(CheckFailure(name, f">= {minimum}", str(actual)))


def _exact(failures: list[CheckFailure], name: str, actual: bytes, expected: bytes | None) -> None:
    if expected is not None and actual != expected:
        failures.append(CheckFailure(name, expected.hex(), actual.hex()))


def _svn_minimum(
    failures: list[CheckFailure], name: str, actual: bytes, minimum: bytes | None
) -> None:
    if minimum is not None and any(a < m for a, m in zip(actual, minimum, strict=True)):
        failures.append(CheckFailure(name, f">= {minimum.hex()} (each byte)", actual.hex()))


def _absent(name: str, expected: str) -> CheckFailure:
    return CheckFailure(name, expected, "absent (not a TDX 1.5 quote body)")


def _fixed_bits(
    failures: list[CheckFailure], name: str, raw: bytes, fixed1: int, fixed0: int
) -> None:
    value = int.from_bytes(raw, "little")
    if value & fixed1 != fixed1 or value & ~fixed0:
        failures.append(
            CheckFailure(
                name,
                f"bits {fixed1:#x} set and none outside {fixed0:#x} (little-endian u64)",
                raw.hex(),
            )
        )
