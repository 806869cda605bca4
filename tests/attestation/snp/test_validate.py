"""Each policy check, passing and failing, on reports signed by the synthetic signer."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from prism_backends.attestation.common import CheckFailure
from prism_backends.attestation.snp import abi
from prism_backends.attestation.snp.policy import ProductSpec, SnpPolicy, sev_key_digest
from prism_backends.attestation.snp.roots import bundled_roots
from prism_backends.attestation.snp.validate import validate
from prism_backends.attestation.snp.verify import VerifiedSnp, verify

from . import samples
from .signer import (
    MILAN_TCB,
    NOT_AFTER,
    NOT_BEFORE,
    NOW,
    ReportSpec,
    amd_name,
    ec_key,
    hierarchy,
    signed,
)

MILAN = hierarchy(abi.MILAN)
BASE = ReportSpec()


def attest(**changes: Any) -> VerifiedSnp:
    """A report with ``changes``, signed by a synthetic VCEK that matches it, verified."""
    spec = BASE.replace(**changes)
    vcek = MILAN.endorsement(tcb=spec.reported_tcb, chip_id=spec.chip_id)
    return verify(signed(spec, vcek), roots=MILAN.roots(), now=NOW, vcek=vcek.der)


def tcb(*, bl: int = 3, tee: int = 0, snp: int = 14, microcode: int = 209) -> int:
    return abi.compose_tcb(abi.MILAN, bl=bl, tee=tee, snp=snp, microcode=microcode)


def text(raw: int) -> str:
    return abi.decode_tcb(raw, abi.MILAN).describe()


LOWER = tcb(bl=2)
HIGHER = tcb(snp=15)
AUTHOR = bytes([0xA1]) * 48
ID_KEY = bytes([0x1D]) * 48


@dataclass(frozen=True)
class Case:
    """A policy, report changes that pass it, changes that fail it, and the failures."""

    id: str
    policy: SnpPolicy
    good: dict[str, Any]
    bad: dict[str, Any]
    failures: list[CheckFailure]


def P(**fields: Any) -> SnpPolicy:
    """A policy allowing SMT (as Cocos writes: policy 0x30000) plus ``fields``."""
    return SnpPolicy(**({"policy": 0x30000} | fields))


def fail(name: str, expected: str, actual: str) -> list[CheckFailure]:
    return [CheckFailure(field=name, expected=expected, actual=actual)]


CASES = [
    Case(
        "guest_svn",
        P(minimum_guest_svn=2),
        {"guest_svn": 2},
        {"guest_svn": 1},
        fail("guest_svn", ">= 2", "1"),
    ),
    Case(
        "abi_version",
        P(policy=0x30137),
        {"policy": 0x30137},
        {"policy": 0x30133},
        fail("policy.abi_version", ">= 1.55", "1.51"),
    ),
    Case(
        "smt",
        P(policy=0x20000),
        {"policy": 0x20000},
        {"policy": 0x30000},
        fail("policy.smt", "false", "true"),
    ),
    Case(
        "migrate_ma",
        P(policy=0x30000),
        {},
        {"policy": 0x70000},
        fail("policy.migrate_ma", "false", "true"),
    ),
    Case(
        "debug",
        P(policy=0x30000),
        {},
        {"policy": 0xB0000},
        fail("policy.debug", "false", "true"),
    ),
    Case(
        "cxl_allowed",
        P(policy=0x30000),
        {},
        {"policy": 0x230000},
        fail("policy.cxl_allowed", "false", "true"),
    ),
    Case(
        "single_socket",
        P(policy=0x130000),
        {"policy": 0x130000},
        {},
        fail("policy.single_socket", "true", "false"),
    ),
    Case(
        "mem_aes_256_xts",
        P(policy=0x430000),
        {"policy": 0x430000},
        {},
        fail("policy.mem_aes_256_xts", "true", "false"),
    ),
    Case(
        "rapl_dis",
        P(policy=0x830000),
        {"policy": 0x830000},
        {},
        fail("policy.rapl_dis", "true", "false"),
    ),
    Case(
        "ciphertext_hiding_dram",
        P(policy=0x1030000),
        {"policy": 0x1030000},
        {},
        fail("policy.ciphertext_hiding_dram", "true", "false"),
    ),
    Case(
        "page_swap_disable",
        P(policy=0x2030000),
        {"policy": 0x2030000},
        {},
        fail("policy.page_swap_disable", "true", "false"),
    ),
    Case(
        "report_data",
        P(report_data=b"\x01" * 64),
        {"report_data": b"\x01" * 64},
        {},
        fail("report_data", "01" * 64, "00" * 64),
    ),
    Case(
        "host_data",
        P(host_data=b"\x02" * 32),
        {"host_data": b"\x02" * 32},
        {},
        fail("host_data", "02" * 32, "00" * 32),
    ),
    Case(
        "family_id",
        P(family_id=b"\x03" * 16),
        {"family_id": b"\x03" * 16},
        {},
        fail("family_id", "03" * 16, "00" * 16),
    ),
    Case(
        "image_id",
        P(image_id=b"\x04" * 16),
        {"image_id": b"\x04" * 16},
        {},
        fail("image_id", "04" * 16, "00" * 16),
    ),
    Case(
        "report_id",
        P(report_id=b"\x05" * 32),
        {"report_id": b"\x05" * 32},
        {},
        fail("report_id", "05" * 32, "00" * 32),
    ),
    Case(
        "report_id_ma",
        P(report_id_ma=b"\xff" * 32),
        {},
        {"report_id_ma": b"\x06" * 32},
        fail("report_id_ma", "ff" * 32, "06" * 32),
    ),
    Case(
        "measurement",
        P(measurement=bytes(range(48))),
        {},
        {"measurement": bytes(48)},
        fail("measurement", bytes(range(48)).hex(), "00" * 48),
    ),
    Case(
        "chip_id",
        P(chip_id=BASE.chip_id),
        {},
        {"chip_id": bytes(range(2, 66))},
        fail("chip_id", BASE.chip_id.hex(), bytes(range(2, 66)).hex()),
    ),
    Case(
        "committed_tcb",
        P(),
        {},
        {"committed_tcb": LOWER},
        fail("committed_tcb", f"== current_tcb {text(MILAN_TCB)}", text(LOWER)),
    ),
    Case(
        "committed_tcb_provisional",
        P(permit_provisional_firmware=True),
        {"committed_tcb": LOWER},
        {"committed_tcb": HIGHER},
        fail("committed_tcb", f"<= current_tcb {text(MILAN_TCB)}", text(HIGHER)),
    ),
    Case(
        "launch_tcb",
        P(minimum_launch_tcb=MILAN_TCB),
        {},
        {"launch_tcb": LOWER},
        fail("launch_tcb", f">= {text(MILAN_TCB)}", text(LOWER)),
    ),
    Case(
        "reported_tcb_above_current",
        P(),
        {},
        {"reported_tcb": HIGHER},
        fail("reported_tcb", f"<= current_tcb {text(MILAN_TCB)}", text(HIGHER)),
    ),
    Case(
        "minimum_tcb",
        P(minimum_tcb=MILAN_TCB),
        {},
        {"reported_tcb": LOWER},
        fail("reported_tcb", f">= {text(MILAN_TCB)}", text(LOWER)),
    ),
    Case(
        "minimum_tcb_component_wise",
        P(minimum_tcb=tcb(bl=2, snp=15)),
        {
            "reported_tcb": tcb(bl=2, snp=15),
            "current_tcb": tcb(snp=15),
            "committed_tcb": tcb(snp=15),
        },
        {"reported_tcb": tcb(bl=3, snp=14)},
        fail("reported_tcb", f">= {text(tcb(bl=2, snp=15))}", text(MILAN_TCB)),
    ),
    Case(
        "minimum_build",
        P(minimum_build=21),
        {},
        {"current": (1, 55, 20), "committed": (1, 55, 20)},
        fail("current_build", ">= 21", "20"),
    ),
    Case(
        "minimum_version",
        P(minimum_version=(1, 55)),
        {},
        {"current": (1, 51, 21), "committed": (1, 51, 21)},
        fail("current_version", ">= 1.55", "1.51"),
    ),
    Case(
        "committed_build",
        P(),
        {},
        {"committed": (1, 55, 20)},
        fail("committed_build", "== current_build 21", "20"),
    ),
    Case(
        "committed_version",
        P(),
        {},
        {"committed": (1, 54, 21)},
        fail("committed_version", "== current_version 1.55", "1.54"),
    ),
    Case(
        "committed_build_provisional",
        P(permit_provisional_firmware=True),
        {"committed": (1, 55, 20)},
        {"committed": (1, 55, 22)},
        fail("committed_build", "<= current_build 21", "22"),
    ),
    Case(
        "committed_version_provisional",
        P(permit_provisional_firmware=True),
        {"committed": (1, 54, 21)},
        {"committed": (1, 56, 21)},
        fail("committed_version", "<= current_version 1.55", "1.56"),
    ),
    Case(
        "platform_smt",
        P(platform_info=0x0),
        {"platform_info": 0x0},
        {},
        fail("platform_info.smt_enabled", "false", "true"),
    ),
    Case(
        "platform_tsme",
        P(platform_info=0x1),
        {},
        {"platform_info": 0x3},
        fail("platform_info.tsme_enabled", "false", "true"),
    ),
    Case(
        "platform_ecc",
        P(platform_info=0x5),
        {"platform_info": 0x5},
        {},
        fail("platform_info.ecc_enabled", "true", "false"),
    ),
    Case(
        "platform_rapl",
        P(platform_info=0x9),
        {"platform_info": 0x9},
        {},
        fail("platform_info.rapl_disabled", "true", "false"),
    ),
    Case(
        "platform_ciphertext",
        P(platform_info=0x11),
        {"platform_info": 0x11},
        {},
        fail("platform_info.ciphertext_hiding_dram_enabled", "true", "false"),
    ),
    Case(
        "platform_alias",
        P(platform_info=0x21),
        {"platform_info": 0x21},
        {},
        fail("platform_info.alias_check_complete", "true", "false"),
    ),
    Case(
        "platform_unknown_bits",
        P(platform_info=0x1),
        {},
        {"platform_info": 0x41},
        fail("platform_info", "no bits beyond 0x3f", "0x41"),
    ),
    Case(
        "author_key_en",
        P(require_author_key=True, trusted_author_key_hashes=(AUTHOR,)),
        {"signer_info": 1, "author_key_digest": AUTHOR},
        {"author_key_digest": AUTHOR},
        [
            *fail("author_key_en", "true", "false"),
            *fail("id_key_digest", "a trusted key digest (none configured)", "00" * 48),
        ],
    ),
    Case(
        "author_key_digest",
        P(
            require_author_key=True,
            trusted_author_key_hashes=(AUTHOR,),
            trusted_id_key_hashes=(ID_KEY,),
        ),
        {"signer_info": 1, "author_key_digest": AUTHOR},
        {"signer_info": 1, "author_key_digest": ID_KEY, "id_key_digest": ID_KEY},
        fail("author_key_digest", f"one of {AUTHOR.hex()}", ID_KEY.hex()),
    ),
    Case(
        "id_key_digest",
        P(require_id_block=True, trusted_id_key_hashes=(ID_KEY,)),
        {"id_key_digest": ID_KEY},
        {"id_key_digest": AUTHOR},
        fail("id_key_digest", f"one of {ID_KEY.hex()}", AUTHOR.hex()),
    ),
    Case(
        "id_block_via_trusted_author",
        P(require_id_block=True, trusted_author_key_hashes=(AUTHOR,)),
        {"signer_info": 1, "author_key_digest": AUTHOR},
        {"signer_info": 0, "author_key_digest": AUTHOR},
        fail("id_key_digest", "a trusted key digest (none configured)", "00" * 48),
    ),
    Case("vmpl", P(vmpl=0), {}, {"vmpl": 2}, fail("vmpl", "0", "2")),
    Case(
        "machine_stepping",
        P(product=ProductSpec("Milan", 1)),
        {},
        {"cpuid": (0x19, 0x01, 0x00)},
        fail("product.machine_stepping", "1", "0"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_check_passes(case: Case) -> None:
    assert validate(attest(**case.good), case.policy) == []


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_check_fails(case: Case) -> None:
    assert validate(attest(**case.bad), case.policy) == case.failures


def test_the_base_report_passes_the_base_policy() -> None:
    assert validate(attest(), P()) == []


def test_an_absent_guest_policy_allows_no_optional_feature() -> None:
    assert validate(attest(), SnpPolicy()) == fail("policy.smt", "false", "true")
    assert validate(attest(policy=0x20000), SnpPolicy()) == []


def test_allowed_capabilities_pass() -> None:
    everything = SnpPolicy(policy=0x3FF0000)
    assert validate(attest(policy=0x3FF0000), everything) == []


def test_every_failure_is_reported() -> None:
    policy = P(minimum_guest_svn=5, vmpl=1, host_data=b"\x01" * 32)
    failures = validate(attest(), policy)
    assert [f.field for f in failures] == ["guest_svn", "host_data", "vmpl"]
    assert str(failures[0]) == "guest_svn: expected >= 5, got 1"


def test_product() -> None:
    verified = attest()
    assert validate(verified, P(product=ProductSpec("Milan"))) == []
    assert validate(verified, P(product=ProductSpec("Genoa"))) == fail("product", "Genoa", "Milan")


def test_a_bare_report_without_product_shows_tcbs_raw() -> None:
    report = attest(committed_tcb=LOWER).report
    v2 = abi.parse_report(bytes(BASE.replace(version=2, committed_tcb=LOWER).encode()))
    expected = fail("committed_tcb", f"== current_tcb 0x{MILAN_TCB:016x}", f"0x{LOWER:016x}")
    assert validate(v2, P()) == expected
    assert validate(report, P()) == fail(
        "committed_tcb", f"== current_tcb {text(MILAN_TCB)}", text(LOWER)
    )
    assert validate(v2, P(product=ProductSpec("Milan")), product="Milan") == fail(
        "committed_tcb", f"== current_tcb {text(MILAN_TCB)}", text(LOWER)
    )
    assert validate(v2, P(product=ProductSpec("Milan")))[-1] == CheckFailure(
        "product", "Milan", "unknown"
    )


def test_trusted_id_key_certificate() -> None:
    key = ec_key("id-key")
    cert = (
        x509.CertificateBuilder()
        .subject_name(amd_name("ID key"))
        .issuer_name(amd_name("ID key"))
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .sign(key, hashes.SHA384())
    )
    der = cert.public_bytes(Encoding.DER)
    digest = sev_key_digest(der)
    assert digest is not None
    policy = P(require_id_block=True, trusted_id_keys=(der,))
    assert validate(attest(id_key_digest=digest), policy) == []
    assert [f.field for f in validate(attest(), policy)] == ["id_key_digest"]


def test_turin_minimums() -> None:
    turin = hierarchy(abi.TURIN)
    current = abi.compose_tcb(abi.TURIN, fmc=1, bl=2, tee=3, snp=4, microcode=5)
    minimum = abi.compose_tcb(abi.TURIN, fmc=2, bl=2, tee=3, snp=4, microcode=5)
    chip = bytes(range(1, 9)) + bytes(56)
    spec = BASE.replace(
        current_tcb=current,
        reported_tcb=current,
        committed_tcb=current,
        launch_tcb=current,
        chip_id=chip,
        cpuid=(0x1A, 0x02, 0x00),
    )
    vcek = turin.endorsement(tcb=current, chip_id=chip)
    verified = verify(signed(spec, vcek), roots=turin.roots(), now=NOW, vcek=vcek.der)
    # minimum_tcb_turin takes precedence on Turin; the Milan/Genoa minimum is then unused.
    assert validate(verified, P(minimum_tcb=minimum, minimum_tcb_turin=current)) == []
    shown = abi.decode_tcb(minimum, abi.TURIN).describe()
    assert validate(verified, P(minimum_tcb_turin=minimum)) == fail(
        "reported_tcb", f">= {shown}", abi.decode_tcb(current, abi.TURIN).describe()
    )
    assert shown == "0x0500000004030202 (fmc=2 bl=2 tee=3 snp=4 microcode=5)"


def test_the_real_sample_against_a_cocos_like_policy() -> None:
    verified = verify(samples.REPORT, roots=bundled_roots(), now=samples.NOW, vcek=samples.VCEK)
    policy = P(
        policy=0x30000,
        measurement=bytes.fromhex(samples.MEASUREMENT),
        minimum_tcb=verified.report.reported_tcb,
        report_id_ma=b"\xff" * 32,
        vmpl=0,
        product=ProductSpec("Milan"),
    )
    # The sample was taken from a debug guest: a policy without debug refuses it.
    assert validate(verified, policy) == fail("policy.debug", "false", "true")
    assert validate(verified, dataclasses.replace(policy, policy=0xB0000)) == []
