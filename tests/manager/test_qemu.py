"""The QEMU command lines, checked against Cocos' layout flag by flag; no SNP
or TDX hardware is needed to check a command line."""

from __future__ import annotations

import json
from pathlib import Path

from prism_backends.manager.qemu import (
    Accelerator,
    Firmware,
    Launch,
    SevSnpOptions,
    VmLaunch,
    command_line,
)

FIRMWARE = Firmware(
    kernel=Path("/img/vmlinuz"),
    initrd=Path("/img/initrd.gz"),
    append="console=ttyS0",
    ovmf=Path("/usr/share/ovmf/OVMF.amdsev.fd"),
)


def launch(kind: Launch, accelerator: Accelerator = Accelerator.KVM, **changes: object) -> VmLaunch:
    settings: dict[str, object] = {
        "name": "vm-1",
        "vcpus": 4,
        "memory_mib": 2048,
        "launch": kind,
        "accelerator": accelerator,
        "firmware": FIRMWARE,
        "host_port": 6101,
        "certs_dir": Path("/vms/vm-1/certs"),
        "env_dir": Path("/vms/vm-1/env"),
        "console_socket": Path("/vms/vm-1/console.sock"),
    }
    settings.update(changes)
    return VmLaunch(**settings)  # type: ignore[arg-type]


def options(argv: list[str], flag: str) -> list[str]:
    """Every value given to ``flag``, in order."""
    return [argv[index + 1] for index, word in enumerate(argv) if word == flag]


def test_sev_snp_launch_has_cocos_objects_and_machine_options() -> None:
    argv = command_line(launch(Launch.SEV_SNP, sev_snp=SevSnpOptions(host_data="aG9zdA==")))
    assert argv[0] == "qemu-system-x86_64"
    assert "-enable-kvm" in argv
    assert options(argv, "-machine") == ["q35,confidential-guest-support=sev0,memory-backend=ram1"]
    assert options(argv, "-cpu") == ["EPYC-v4"]
    assert options(argv, "-smp") == ["4,maxcpus=4"]
    objects = options(argv, "-object")
    assert "memory-backend-memfd,id=ram1,size=2048M,share=true,prealloc=false" in objects
    snp = next(item for item in objects if item.startswith("sev-snp-guest"))
    fields = dict(part.partition("=")[::2] for part in snp.split(",")[1:])
    assert fields == {
        "id": "sev0",
        "cbitpos": "51",
        "reduced-phys-bits": "1",
        "kernel-hashes": "on",
        "host-data": "aG9zdA==",
    }
    assert options(argv, "-bios") == ["/usr/share/ovmf/OVMF.amdsev.fd"]
    assert options(argv, "-kernel") == ["/img/vmlinuz"]
    assert options(argv, "-initrd") == ["/img/initrd.gz"]
    assert options(argv, "-append") == ["console=ttyS0"]
    # Cocos' network device: devices reach confidential guests' memory through the IOMMU path.
    assert (
        "virtio-net-pci,disable-legacy=on,iommu_platform=true,netdev=vmnic,addr=0x2,romfile="
        in options(argv, "-device")
    )


def test_sev_snp_with_igvm_uses_it_instead_of_ovmf() -> None:
    firmware = Firmware(Path("/k"), Path("/i"), "", igvm=Path("/img/coconut.igvm"))
    argv = command_line(launch(Launch.SEV_SNP, firmware=firmware))
    assert "igvm-cfg,id=igvm0,file=/img/coconut.igvm" in options(argv, "-object")
    assert options(argv, "-machine")[0].endswith(",igvm-cfg=igvm0")
    assert options(argv, "-bios") == []


def test_tdx_launch_has_the_quote_socket_split_irqchip_and_no_hpet() -> None:
    argv = command_line(launch(Launch.TDX))
    machine = options(argv, "-machine")[0].split(",")
    assert machine[0] == "q35"
    assert {"hpet=off", "kernel-irqchip=split", "confidential-guest-support=tdx0",
            "memory-backend=ram1"} <= set(machine)  # fmt: skip
    tdx = next(json.loads(item) for item in options(argv, "-object") if item.startswith("{"))
    assert tdx == {
        "qom-type": "tdx-guest",
        "id": "tdx0",
        "quote-generation-socket": {"type": "vsock", "cid": "2", "port": "4050"},
    }
    assert options(argv, "-cpu") == ["host"]
    assert options(argv, "-bios") == ["/usr/share/ovmf/OVMF.amdsev.fd"]


def test_plain_vm_under_emulation_has_no_confidential_parts() -> None:
    argv = command_line(launch(Launch.PLAIN, Accelerator.TCG))
    assert "-enable-kvm" not in argv
    assert options(argv, "-accel") == ["tcg,tb-size=64"]
    assert options(argv, "-machine") == ["q35"]
    assert options(argv, "-cpu") == ["qemu64"]
    assert options(argv, "-object") == []
    assert options(argv, "-bios") == []


def test_every_launch_forwards_the_agent_port_and_shares_cocos_mounts() -> None:
    for kind in Launch:
        argv = command_line(launch(kind))
        assert options(argv, "-netdev") == ["user,id=vmnic,hostfwd=tcp:127.0.0.1:6101-:7002"]
        devices = options(argv, "-device")
        assert "virtio-9p-pci,fsdev=certsfs,mount_tag=certs_share" in devices
        assert "virtio-9p-pci,fsdev=envfs,mount_tag=env_share" in devices
        shares = options(argv, "-fsdev")
        assert "local,id=certsfs,path=/vms/vm-1/certs,security_model=none,readonly=on" in shares
        assert "local,id=envfs,path=/vms/vm-1/env,security_model=none,readonly=on" in shares
        assert options(argv, "-serial") == ["chardev:console0"]
        assert "-no-reboot" in argv  # a guest that powers off ends QEMU
        assert options(argv, "-name") == ["vm-1"]
