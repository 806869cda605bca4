"""The QEMU command line of one VM: a pure function of its launch settings.

The layout follows Cocos' manager (``manager/qemu``, its MANAGER_QEMU_*
defaults): q35, user-mode
networking that forwards a host port to the agent's 7002, the certificates
and the environment file as 9p shares named ``certs_share`` and
``env_share``, direct kernel boot, and per platform:

- SEV-SNP: a ``memory-backend-memfd`` (shared) as the machine's memory, an
  ``sev-snp-guest`` object (cbitpos, reduced-phys-bits, kernel hashes so the
  kernel, initrd and command line are measured, optional host-data) named as
  the machine's ``confidential-guest-support``, and OVMF as ``-bios`` or an
  IGVM file.
- TDX: a ``tdx-guest`` object with its quote-generation socket, the split
  irqchip, ``hpet=off`` and OVMF as ``-bios``.
- none: a plain VM (development only: nothing in it is confidential).

Where this departs from Cocos' defaults, it is on purpose: OVMF is given as
``-bios`` (QEMU takes SEV-SNP and TDX firmware no other way; Cocos' pflash
drives are for plain boots), the memory is not hot-pluggable (``slots`` and
``maxmem`` do not apply to confidential guests), no vsock device is added
(nothing here speaks vsock), and the serial console goes to a socket the
manager logs, not a pty.

No I/O here: paths are taken as given, so the lines can be checked anywhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

# The agent's port inside the guest, as in Cocos.
GUEST_AGENT_PORT = 7002
SEV_ID = "sev0"
TDX_ID = "tdx0"
MEMORY_ID = "ram1"
NETDEV_ID = "vmnic"


class Launch(StrEnum):
    SEV_SNP = "sev-snp"
    TDX = "tdx"
    PLAIN = "none"


class Accelerator(StrEnum):
    KVM = "kvm"
    TCG = "tcg"  # software emulation


@dataclass(frozen=True, slots=True)
class Firmware:
    """What the guest boots: a kernel, its initrd and command line, and for
    confidential launches the firmware (OVMF as -bios, or an IGVM file)."""

    kernel: Path
    initrd: Path
    append: str
    ovmf: Path | None = None
    igvm: Path | None = None


@dataclass(frozen=True, slots=True)
class SevSnpOptions:
    cbitpos: int = 51
    reduced_phys_bits: int = 1
    kernel_hashes: bool = True
    host_data: str = ""  # base64 of 32 bytes, or empty


@dataclass(frozen=True, slots=True)
class TdxOptions:
    # Where the host's Quote Generation Service listens (Cocos: vsock cid 2 port 4050).
    quote_generation_socket: dict[str, str] = field(
        default_factory=lambda: {"type": "vsock", "cid": "2", "port": "4050"}
    )


@dataclass(frozen=True, slots=True)
class VmLaunch:
    """Everything that decides one VM's command line."""

    name: str
    vcpus: int
    memory_mib: int
    launch: Launch
    accelerator: Accelerator
    firmware: Firmware
    host_port: int
    certs_dir: Path
    env_dir: Path
    console_socket: Path
    host_address: str = "127.0.0.1"
    cpu_model: str = ""  # default: see default_cpu
    sev_snp: SevSnpOptions = field(default_factory=SevSnpOptions)
    tdx: TdxOptions = field(default_factory=TdxOptions)
    qemu_binary: str = "qemu-system-x86_64"


def command_line(vm: VmLaunch) -> list[str]:
    """The argv that launches ``vm``; the first element is the QEMU binary."""
    argv = [vm.qemu_binary, "-name", vm.name, "-nodefaults", "-no-reboot"]
    argv += _accelerator(vm)
    argv += ["-machine", _machine(vm), "-cpu", default_cpu(vm)]
    argv += ["-smp", f"{vm.vcpus},maxcpus={vm.vcpus}", "-m", f"{vm.memory_mib}M"]
    argv += _memory_backend(vm)
    argv += _confidential_object(vm)
    argv += _firmware(vm)
    argv += _network(vm)
    argv += _share("certs_share", vm.certs_dir, "certsfs")
    argv += _share("env_share", vm.env_dir, "envfs")
    argv += [
        "-chardev",
        f"socket,id=console0,path={vm.console_socket},server=on,wait=off",
        "-serial",
        "chardev:console0",
        "-display",
        "none",
        "-monitor",
        "none",
    ]
    return argv


def _accelerator(vm: VmLaunch) -> list[str]:
    if vm.accelerator is Accelerator.KVM:
        return ["-enable-kvm"]
    # A larger translation cache costs memory, not speed, past this size.
    return ["-accel", "tcg,tb-size=64"]


def _machine(vm: VmLaunch) -> str:
    parts = ["q35"]
    if vm.launch is Launch.SEV_SNP:
        parts += [f"confidential-guest-support={SEV_ID}", f"memory-backend={MEMORY_ID}"]
        if vm.firmware.igvm is not None:
            parts.append("igvm-cfg=igvm0")
    elif vm.launch is Launch.TDX:
        parts += [
            "hpet=off",
            "kernel-irqchip=split",
            f"confidential-guest-support={TDX_ID}",
            f"memory-backend={MEMORY_ID}",
        ]
    return ",".join(parts)


def default_cpu(vm: VmLaunch) -> str:
    """The CPU model: as configured, else Cocos' (EPYC-v4 for SEV-SNP, the host's
    for TDX and plain KVM guests), or qemu64 under emulation."""
    if vm.cpu_model:
        return vm.cpu_model
    if vm.accelerator is Accelerator.TCG:
        return "qemu64"
    return "EPYC-v4" if vm.launch is Launch.SEV_SNP else "host"


def _memory_backend(vm: VmLaunch) -> list[str]:
    if vm.launch is Launch.PLAIN:
        return []
    return [
        "-object",
        f"memory-backend-memfd,id={MEMORY_ID},size={vm.memory_mib}M,share=true,prealloc=false",
    ]


def _confidential_object(vm: VmLaunch) -> list[str]:
    if vm.launch is Launch.SEV_SNP:
        options = vm.sev_snp
        spec = (
            f"sev-snp-guest,id={SEV_ID},cbitpos={options.cbitpos},"
            f"reduced-phys-bits={options.reduced_phys_bits}"
        )
        if options.kernel_hashes:
            spec += ",kernel-hashes=on"
        if options.host_data:
            spec += f",host-data={options.host_data}"
        argv = ["-object", spec]
        if vm.firmware.igvm is not None:
            argv += ["-object", f"igvm-cfg,id=igvm0,file={vm.firmware.igvm}"]
        return argv
    if vm.launch is Launch.TDX:
        tdx = {
            "qom-type": "tdx-guest",
            "id": TDX_ID,
            "quote-generation-socket": vm.tdx.quote_generation_socket,
        }
        return ["-object", json.dumps(tdx, separators=(",", ":"))]
    return []


def _firmware(vm: VmLaunch) -> list[str]:
    firmware = vm.firmware
    argv: list[str] = []
    if vm.launch is not Launch.PLAIN and firmware.igvm is None and firmware.ovmf is not None:
        argv += ["-bios", str(firmware.ovmf)]
    argv += ["-kernel", str(firmware.kernel), "-initrd", str(firmware.initrd)]
    argv += ["-append", firmware.append]
    return argv


def _network(vm: VmLaunch) -> list[str]:
    forward = f"hostfwd=tcp:{vm.host_address}:{vm.host_port}-:{GUEST_AGENT_PORT}"
    device = f"virtio-net-pci,netdev={NETDEV_ID},romfile="
    if vm.launch is not Launch.PLAIN:
        # Confidential guests only let devices reach memory through the IOMMU path.
        device = (
            f"virtio-net-pci,disable-legacy=on,iommu_platform=true,netdev={NETDEV_ID},"
            "addr=0x2,romfile="
        )
    return ["-netdev", f"user,id={NETDEV_ID},{forward}", "-device", device]


def _share(tag: str, path: Path, fsdev_id: str) -> list[str]:
    return [
        "-fsdev",
        f"local,id={fsdev_id},path={path},security_model=none,readonly=on",
        "-device",
        f"virtio-9p-pci,fsdev={fsdev_id},mount_tag={tag}",
    ]
