"""The host manager's settings: flags, then ``PRISM_MANAGER_*`` environment,
then a TOML file, then defaults."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from prism_backends.config import LayeredSettings, load_layered

ENV_PREFIX = "PRISM_MANAGER_"


def _default_memory_budget() -> int:
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 8192
    return int(pages * 0.75) // (1 << 20)


class ManagerSettings(LayeredSettings):
    """Everything a host manager can be told. Each description is its help text."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    data_dir: Path = Field(
        Path(".prism-manager"),
        description="VM state, shares, console logs, the guest image and the TLS material.",
    )
    host: str = Field("127.0.0.1", description="Address the gRPC endpoint listens on.")
    port: int = Field(7019, ge=0, le=65535, description="Port of the gRPC endpoint (0: any).")
    health_port: int = Field(
        7021, ge=0, le=65535, description="Port of /health and /metrics (HTTP; 0: any)."
    )
    max_vms: int = Field(10, ge=1, description="Most VMs at once (Cocos: MANAGER_MAX_VMS).")
    max_vcpus: int = Field(
        default_factory=lambda: max(4, (os.cpu_count() or 1) * 8),
        ge=1,
        description="Most vCPUs over all VMs.",
    )
    max_memory_mib: int = Field(
        default_factory=_default_memory_budget, ge=64, description="Most guest memory over all VMs."
    )
    vm_memory_mib: int = Field(1024, ge=128, description="Memory of each VM unless asked.")
    default_vcpus: int = Field(1, ge=1, description="vCPUs of a VM when the request names none.")
    vcpu_counts: list[int] = Field(
        default_factory=lambda: [1, 2, 4, 8, 16], description="vCPU counts a VM may have."
    )
    port_range: str = Field("6100-6200", description="Host ports forwarded to agents' 7002.")
    development: bool = Field(
        False,
        description="Allow plain VMs where the host has no SEV-SNP or TDX (marked not "
        "confidential; their attestation cannot succeed).",
    )
    accelerator: Literal["auto", "kvm", "tcg"] = Field(
        "auto", description="auto: KVM when a probe boots a guest with it, else emulation."
    )
    platforms: list[Literal["sev-snp", "tdx"]] | None = Field(
        None,
        description="Confidential platforms to launch, instead of detecting them (Cocos: "
        "ENABLE_SEV_SNP / ENABLE_TDX), for hosts whose flags detection misreads.",
    )
    qemu_binary: str = Field("qemu-system-x86_64", description="The QEMU to launch.")
    ovmf: Path | None = Field(
        None, description="OVMF for confidential launches (an AmdSev build for SEV-SNP)."
    )
    igvm: Path | None = Field(None, description="An IGVM file for SEV-SNP launches (not OVMF).")
    host_data: str = Field("", description="SEV-SNP host data (base64 of 32 bytes), if any.")
    images_dir: Path | None = Field(
        None, description="Where guest images are built and cached. Default: DATA_DIR/images."
    )
    guest_kernel: Path | None = Field(None, description="Boot this kernel, not the built image.")
    guest_initrd: Path | None = Field(None, description="Boot this initrd, not the built image.")
    guest_command_line: str = Field("", description="The kernel command line with those files.")
    stop_grace_seconds: float = Field(
        10.0, gt=0, description="Wait after SIGTERM before a VM's QEMU is killed."
    )
    console_log_bytes: int = Field(
        1 << 20, ge=4096, description="Size at which a VM's console log is rotated."
    )
    console_logs_kept: int = Field(3, ge=1, description="Rotated console logs kept per VM.")
    policy_format: Literal["corim", "json"] = Field(
        "corim", description="What AttestationPolicy returns: CoRIM (as Cocos) or JSON."
    )
    tls_cert: Path | None = Field(None, description="The server certificate (PEM).")
    tls_key: Path | None = Field(None, description="The server key (PEM).")
    client_ca: Path | None = Field(
        None, description="CA of the clients (backends) allowed in. Default: one in DATA_DIR."
    )
    server_names: list[str] = Field(
        default_factory=lambda: ["localhost", "127.0.0.1"],
        description="Names in the generated server certificate.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="")

    @field_validator("data_dir", "images_dir", "ovmf", "igvm", "guest_kernel", "guest_initrd")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        # QEMU runs in each VM's directory and the image build in its own: a
        # relative path would name another file there.
        return value.resolve() if value is not None else None

    @field_validator("port_range")
    @classmethod
    def _check_range(cls, value: str) -> str:
        first, _, last = value.partition("-")
        if not (first.isdigit() and last.isdigit() and 1 <= int(first) <= int(last) <= 65535):
            raise ValueError("port_range must be FIRST-LAST, e.g. 6100-6200")
        return value

    @property
    def ports(self) -> range:
        first, _, last = self.port_range.partition("-")
        return range(int(first), int(last) + 1)

    @property
    def effective_images_dir(self) -> Path:
        return self.images_dir or self.data_dir / "images"


def load_manager_settings(config_file: Path | None = None, **overrides: Any) -> ManagerSettings:
    return load_layered(ManagerSettings, config_file, **overrides)
