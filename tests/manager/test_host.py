from __future__ import annotations

from pathlib import Path

from prism_backends.manager import host
from prism_backends.manager.qemu import Accelerator, Launch

SNP_CPU = "processor\t: 0\nmodel name\t: AMD EPYC 9654\nflags\t\t: fpu sev sev_es sev_snp svm\n"
TDX_CPU = "processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: fpu vmx tdx_host_platform\n"
PLAIN_CPU = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2\n"


def test_sev_snp_needs_the_cpu_flag_and_the_enabled_kvm_parameter() -> None:
    assert host.confidential_platforms(SNP_CPU, {Launch.SEV_SNP: "Y\n"}) == {Launch.SEV_SNP}
    assert host.confidential_platforms(SNP_CPU, {Launch.SEV_SNP: "N\n"}) == frozenset()
    assert host.confidential_platforms(SNP_CPU, {}) == frozenset()


def test_tdx_is_detected_from_its_host_flag_and_kvm_intel() -> None:
    assert host.confidential_platforms(TDX_CPU, {Launch.TDX: "1"}) == {Launch.TDX}
    assert host.confidential_platforms(PLAIN_CPU, {Launch.TDX: "Y", Launch.SEV_SNP: "Y"}) == set()


def test_cpu_model_is_read_from_cpuinfo() -> None:
    assert host.cpu_model(SNP_CPU) == "AMD EPYC 9654"
    assert host.cpu_model("") == "unknown"


def test_emulation_offers_no_confidential_platform(tmp_path: Path) -> None:
    facts = host.detect("qemu-system-x86_64", tmp_path / "vmlinuz", "tcg")
    assert facts.accelerator is Accelerator.TCG
    assert facts.platforms == frozenset()


def test_kvm_is_not_assumed_from_a_missing_binary(tmp_path: Path) -> None:
    assert not host.kvm_boots_a_guest(str(tmp_path / "no-qemu"), tmp_path / "vmlinuz")
