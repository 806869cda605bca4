"""Check a verified report against a go-sev-guest policy.

The checks go-sev-guest ``validate.SnpAttestation`` makes, each failure
reported (not just the first) as a :class:`CheckFailure` naming the report
field, what the policy expects and what the report holds (bytes as hex):

- ``guest_svn`` >= minimum_guest_svn;
- guest ``policy``: the ABI version at least the policy's; SMT, migration
  agent, debug and CXL only if the policy allows them; single socket, AES-256-XTS,
  RAPL disabled, DRAM ciphertext hiding and page-swap disable when it requires them;
- exact bytes: report_data, host_data, family_id, image_id, report_id,
  report_id_ma, measurement, chip_id;
- TCB: committed == current (or <= with permit_provisional_firmware),
  launch_tcb >= minimum_launch_tcb, reported_tcb <= current_tcb, reported_tcb >=
  minimum_tcb (Turin: the ``*_turin`` minimums when set), each component-wise;
- firmware: current build >= minimum_build, current major.minor >=
  minimum_version, committed build and version == current (or <= when provisional
  firmware is permitted);
- ``platform_info`` (when the policy sets it): no unknown bits; SMT and TSME only
  if allowed; ECC, RAPL disabled, ciphertext hiding, alias check when required;
- keys: AUTHOR_KEY_EN when require_author_key; with require_id_block (or
  require_author_key) the author key digest must be trusted, or else the ID key
  digest must be (hashes given, or computed from the trusted certificates);
- ``vmpl`` equal; ``product`` (and machine stepping) equal.

Not checked: the ID block's and author key's signatures (the firmware checked
them at launch; go-sev-guest does not recheck them either), certificate
revocation (``check_crl``), go-sev-guest's pluggable certificate-table entry
options, and the mitigation vectors (no policy field). The endorsement
certificate's TCB and hwid are matched by :func:`.verify.verify`.
"""

from __future__ import annotations

from prism_backends.attestation.common import CheckFailure
from prism_backends.attestation.snp.abi import (
    PLATFORM_INFO_KNOWN_BITS,
    TURIN,
    Report,
    decode_tcb,
    parse_guest_policy,
    tcb_le,
)
from prism_backends.attestation.snp.kds import normalize_product
from prism_backends.attestation.snp.policy import SnpPolicy, sev_key_digest
from prism_backends.attestation.snp.verify import VerifiedSnp


def _flag(value: bool) -> str:
    return "true" if value else "false"


def validate(
    report: Report | VerifiedSnp, policy: SnpPolicy, *, product: str | None = None
) -> list[CheckFailure]:
    """Every policy check the report fails (an empty list means it passes).

    Give the :class:`VerifiedSnp` from :func:`verify` (its product is used), or a
    bare :class:`Report` with ``product`` (else the report's CPUID fields, version
    3+, name it; TCBs are then shown raw)."""
    if isinstance(report, VerifiedSnp):
        line: str | None = report.product
        report = report.report
    elif product is not None:
        line = normalize_product(product)
    else:
        line = report.cpuid_product
    checks = _Checks(report, line)
    checks.guest_svn(policy)
    checks.guest_policy(policy)
    checks.verbatim(policy)
    checks.tcb(policy)
    checks.firmware(policy)
    checks.platform_info(policy)
    checks.keys(policy)
    checks.vmpl_and_product(policy)
    return checks.failures


class _Checks:
    def __init__(self, report: Report, product: str | None) -> None:
        self.report = report
        self.product = product
        self.failures: list[CheckFailure] = []

    def fail(self, name: str, expected: str, actual: str) -> None:
        """Record one failed check."""
        self.failures.append(CheckFailure(field=name, expected=expected, actual=actual))

    def tcb_text(self, raw: int) -> str:
        """A TCB for messages: decoded when the product is known, else raw hex."""
        if self.product is None:
            return f"0x{raw:016x}"
        return decode_tcb(raw, self.product).describe()

    def guest_svn(self, policy: SnpPolicy) -> None:
        """GUEST_SVN against minimum_guest_svn."""
        if self.report.guest_svn < policy.minimum_guest_svn:
            self.fail("guest_svn", f">= {policy.minimum_guest_svn}", str(self.report.guest_svn))

    def guest_policy(self, policy: SnpPolicy) -> None:
        """GUEST_POLICY against the policy's maximum (and required restrictions)."""
        allowed = policy.guest_policy
        got = parse_guest_policy(self.report.policy)
        if got.abi_version < allowed.abi_version:
            self.fail(
                "policy.abi_version",
                ">= {}.{}".format(*allowed.abi_version),
                "{}.{}".format(*got.abi_version),
            )
        # Capabilities the guest may have only if the policy allows them.
        for name in ("smt", "migrate_ma", "debug", "cxl_allowed"):
            if getattr(got, name) and not getattr(allowed, name):
                self.fail(f"policy.{name}", "false", "true")
        # Restrictions the guest must have when the policy requires them.
        for name in (
            "single_socket",
            "mem_aes_256_xts",
            "rapl_dis",
            "ciphertext_hiding_dram",
            "page_swap_disable",
        ):
            if getattr(allowed, name) and not getattr(got, name):
                self.fail(f"policy.{name}", "true", "false")

    def verbatim(self, policy: SnpPolicy) -> None:
        """Byte fields the policy pins exactly."""
        for name in (
            "report_data",
            "host_data",
            "family_id",
            "image_id",
            "report_id",
            "report_id_ma",
            "measurement",
            "chip_id",
        ):
            want: bytes = getattr(policy, name)
            got: bytes = getattr(self.report, name)
            if want and want != got:
                self.fail(name, want.hex(), got.hex())

    def tcb(self, policy: SnpPolicy) -> None:
        """TCB orderings and minimums, component-wise."""
        r = self.report
        minimum, minimum_launch = policy.minimum_tcb, policy.minimum_launch_tcb
        if self.product == TURIN:
            minimum = policy.minimum_tcb_turin or minimum
            minimum_launch = policy.minimum_launch_tcb_turin or minimum_launch
        current = self.tcb_text(r.current_tcb)
        if policy.permit_provisional_firmware:
            if not tcb_le(r.committed_tcb, r.current_tcb):
                self.fail(
                    "committed_tcb", f"<= current_tcb {current}", self.tcb_text(r.committed_tcb)
                )
        elif r.committed_tcb != r.current_tcb:
            self.fail("committed_tcb", f"== current_tcb {current}", self.tcb_text(r.committed_tcb))
        if not tcb_le(minimum_launch, r.launch_tcb):
            self.fail(
                "launch_tcb", f">= {self.tcb_text(minimum_launch)}", self.tcb_text(r.launch_tcb)
            )
        if not tcb_le(r.reported_tcb, r.current_tcb):
            self.fail("reported_tcb", f"<= current_tcb {current}", self.tcb_text(r.reported_tcb))
        if not tcb_le(minimum, r.reported_tcb):
            self.fail("reported_tcb", f">= {self.tcb_text(minimum)}", self.tcb_text(r.reported_tcb))

    def firmware(self, policy: SnpPolicy) -> None:
        """Firmware build and API version minimums; committed against current."""
        r = self.report
        if r.current_build < policy.minimum_build:
            self.fail("current_build", f">= {policy.minimum_build}", str(r.current_build))
        current = (r.current_major, r.current_minor)
        committed = (r.committed_major, r.committed_minor)
        if current < policy.minimum_version:
            self.fail(
                "current_version",
                ">= {}.{}".format(*policy.minimum_version),
                "{}.{}".format(*current),
            )
        if policy.permit_provisional_firmware:
            if r.committed_build > r.current_build:
                self.fail(
                    "committed_build", f"<= current_build {r.current_build}", str(r.committed_build)
                )
            if committed > current:
                self.fail(
                    "committed_version",
                    "<= current_version {}.{}".format(*current),
                    "{}.{}".format(*committed),
                )
        else:
            if r.committed_build != r.current_build:
                self.fail(
                    "committed_build", f"== current_build {r.current_build}", str(r.committed_build)
                )
            if committed != current:
                self.fail(
                    "committed_version",
                    "== current_version {}.{}".format(*current),
                    "{}.{}".format(*committed),
                )

    def platform_info(self, policy: SnpPolicy) -> None:
        """PLATFORM_INFO against the policy's allowed and required bits."""
        if policy.platform_info is None:
            return
        value = self.report.platform_info
        if value & ~PLATFORM_INFO_KNOWN_BITS:
            self.fail(
                "platform_info", f"no bits beyond 0x{PLATFORM_INFO_KNOWN_BITS:x}", f"0x{value:x}"
            )
            return
        got = self.report.platform
        bits = policy.platform_info
        allowed = {  # name: (bit, True when "only if allowed", False when "required")
            "smt_enabled": (0, True),
            "tsme_enabled": (1, True),
            "ecc_enabled": (2, False),
            "rapl_disabled": (3, False),
            "ciphertext_hiding_dram_enabled": (4, False),
            "alias_check_complete": (5, False),
        }
        for name, (bit, permissive) in allowed.items():
            wanted = bool((bits >> bit) & 1)
            have: bool = getattr(got, name)
            if permissive and have and not wanted:
                self.fail(f"platform_info.{name}", "false", "true")
            if not permissive and wanted and not have:
                self.fail(f"platform_info.{name}", "true", "false")

    def keys(self, policy: SnpPolicy) -> None:
        """Author key and ID key digests against the trusted ones."""
        r = self.report
        signer = r.signer
        if policy.require_author_key and not signer.author_key_en:
            self.fail("author_key_en", "true", "false")
        if not (policy.require_author_key or policy.require_id_block):
            return
        author_hashes = [*policy.trusted_author_key_hashes]
        author_hashes += [d for c in policy.trusted_author_keys if (d := sev_key_digest(c))]
        id_hashes = [*policy.trusted_id_key_hashes]
        id_hashes += [d for c in policy.trusted_id_keys if (d := sev_key_digest(c))]
        author_trusted = signer.author_key_en and r.author_key_digest in author_hashes
        if policy.require_author_key and signer.author_key_en and not author_trusted:
            self.fail("author_key_digest", _one_of(author_hashes), r.author_key_digest.hex())
        if not author_trusted and r.id_key_digest not in id_hashes:
            self.fail("id_key_digest", _one_of(id_hashes), r.id_key_digest.hex())

    def vmpl_and_product(self, policy: SnpPolicy) -> None:
        """VMPL and product (with machine stepping)."""
        r = self.report
        if policy.vmpl is not None and r.vmpl != policy.vmpl:
            self.fail("vmpl", str(policy.vmpl), str(r.vmpl))
        spec = policy.product
        if spec is None:
            return
        if spec.name is not None and spec.name != self.product:
            self.fail("product", spec.name, self.product or "unknown")
        if spec.machine_stepping is not None and spec.machine_stepping != r.cpuid_step:
            actual = "unknown" if r.cpuid_step is None else str(r.cpuid_step)
            self.fail("product.machine_stepping", str(spec.machine_stepping), actual)


def _one_of(digests: list[bytes]) -> str:
    if not digests:
        return "a trusted key digest (none configured)"
    return "one of " + ", ".join(d.hex() for d in digests)
