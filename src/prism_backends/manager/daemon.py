"""Assembling a manager process: the guest image, what the host can do, the
VMs of a previous run, and the endpoints."""

from __future__ import annotations

import logging
import shutil
import threading

from prism_backends.manager import host, image
from prism_backends.manager.image import GuestImage
from prism_backends.manager.server import ManagerServer
from prism_backends.manager.service import VmManager
from prism_backends.manager.settings import ManagerSettings

log = logging.getLogger(__name__)


def guest_image(settings: ManagerSettings) -> GuestImage:
    """The configured kernel and initrd, or the built image (built on first use)."""
    if settings.guest_kernel is not None or settings.guest_initrd is not None:
        if settings.guest_kernel is None or settings.guest_initrd is None:
            raise image.ImageError("guest_kernel and guest_initrd go together")
        return GuestImage(
            kernel=settings.guest_kernel,
            initrd=settings.guest_initrd,
            command_line=settings.guest_command_line or image.KERNEL_COMMAND_LINE,
            digest="configured",
            kernel_version="configured",
            python_version="",
        )
    return image.ensure(settings.effective_images_dir, check_packages=False)


def start(settings: ManagerSettings) -> tuple[VmManager, ManagerServer]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if shutil.which(settings.qemu_binary) is None:
        raise OSError(
            f"{settings.qemu_binary} is not installed: the manager launches every VM with it "
            "(Debian: apt-get install qemu-system-x86)"
        )
    guest = guest_image(settings)
    facts = host.detect(
        settings.qemu_binary, guest.kernel, settings.accelerator, settings.platforms
    )
    log.info(
        "host: %s, accelerator %s, confidential platforms: %s",
        facts.cpu_model,
        facts.accelerator.value,
        ", ".join(sorted(facts.platforms)) or "none",
    )
    if not facts.platforms and not settings.development:
        log.warning("no SEV-SNP or TDX here and not in development mode: every create is refused")
    vms = VmManager(settings, guest, facts)
    vms.adopt()
    server = ManagerServer(vms, settings)
    server.start()
    return vms, server


def run_until(settings: ManagerSettings, stopping: threading.Event) -> None:
    """Serve until ``stopping`` is set. VMs keep running when the manager stops:
    the next start re-adopts them."""
    _vms, server = start(settings)
    try:
        stopping.wait()
    finally:
        server.stop()
