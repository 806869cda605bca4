"""What this host can launch: confidential platforms (detected as Cocos does,
from ``/proc/cpuinfo`` flags and the kvm modules' parameters) and whether KVM
really runs a guest (probed by booting the guest kernel, not assumed from
``/dev/kvm`` existing: a nested or software KVM may exist and fail)."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from prism_backends.manager.qemu import Accelerator, Launch

log = logging.getLogger(__name__)

KVM_PARAMETERS = {
    Launch.SEV_SNP: Path("/sys/module/kvm_amd/parameters/sev_snp"),
    Launch.TDX: Path("/sys/module/kvm_intel/parameters/tdx"),
}
CPU_FLAGS = {Launch.SEV_SNP: "sev_snp", Launch.TDX: "tdx_host_platform"}
PROBE_SECONDS = 20.0


@dataclass(frozen=True, slots=True)
class HostFacts:
    platforms: frozenset[Launch]
    accelerator: Accelerator
    cpu_model: str


def confidential_platforms(cpuinfo: str, parameters: dict[Launch, str]) -> frozenset[Launch]:
    """The platforms both the CPU flags and the enabled kvm module offer."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags.update(value.split())
    found = {
        launch
        for launch, flag in CPU_FLAGS.items()
        if flag in flags and parameters.get(launch, "").strip() in ("Y", "1")
    }
    return frozenset(found)


def cpu_model(cpuinfo: str) -> str:
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return "unknown"


def read_platforms() -> tuple[frozenset[Launch], str]:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset(), "unknown"
    parameters = {}
    for launch, path in KVM_PARAMETERS.items():
        try:
            parameters[launch] = path.read_text()
        except OSError:
            continue
    return confidential_platforms(cpuinfo, parameters), cpu_model(cpuinfo)


def kvm_boots_a_guest(qemu_binary: str, kernel: Path) -> bool:
    """Boot the guest kernel under KVM with no root: it runs far enough to panic
    (and, with panic=-1 and -no-reboot, QEMU exits) only if KVM really works."""
    if not Path("/dev/kvm").exists():
        return False
    argv = [
        qemu_binary,
        "-enable-kvm",
        "-machine",
        "q35",
        "-cpu",
        "host",
        "-m",
        "256M",
        "-nodefaults",
        "-no-reboot",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-kernel",
        str(kernel),
        "-append",
        "console=ttyS0 panic=-1",
    ]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=PROBE_SECONDS, check=False)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired):
        return False
    booted = b"Kernel panic" in done.stdout or b"VFS:" in done.stdout
    log.info("KVM probe: %s", "a guest boots" if booted else "no guest boots; emulation it is")
    return booted


def detect(
    qemu_binary: str, kernel: Path, accelerator: str, configured: Sequence[str] | None = None
) -> HostFacts:
    """What this host launches; ``configured`` platforms replace the detected ones."""
    platforms, model = read_platforms()
    if configured is not None:
        platforms = frozenset(Launch(name) for name in configured)
    if accelerator == "kvm":
        chosen = Accelerator.KVM
    elif accelerator == "tcg":
        chosen = Accelerator.TCG
    else:
        chosen = Accelerator.KVM if kvm_boots_a_guest(qemu_binary, kernel) else Accelerator.TCG
    # Confidential launches need KVM; under emulation nothing is confidential.
    return HostFacts(
        platforms=platforms if chosen is Accelerator.KVM else frozenset(),
        accelerator=chosen,
        cpu_model=model,
    )
