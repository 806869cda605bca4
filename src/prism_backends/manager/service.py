"""The host manager's work: create, remove and describe VMs, within capacity,
with TTLs, surviving its own restarts.

Every change is persisted before it is acted on: a VM's directory and record
exist before its QEMU starts, so a manager that dies mid-create finds the VM
again (or its remains, to clean up) at its next start.
"""

from __future__ import annotations

import hashlib
import logging
import re
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from prism_backends.manager import measure, qemu
from prism_backends.manager.host import HostFacts
from prism_backends.manager.image import GuestImage
from prism_backends.manager.settings import ManagerSettings
from prism_backends.manager.supervisor import CONSOLE_SOCKET, Supervisor, find_by_name
from prism_backends.manager.vms import VmRecord, VmStore

log = logging.getLogger(__name__)

# The guest reaches the host's loopback at this address under slirp.
SLIRP_HOST = "10.0.2.2"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")


class ManagerError(Exception):
    """A request this manager refuses; ``kind`` maps to a gRPC status."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # invalid, not_found, exhausted, precondition


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """Cocos' CreateReq, plus what our metadata adds."""

    log_level: str
    server_ca_cert: bytes
    client_key: bytes = field(repr=False)
    client_cert: bytes
    server_url: str
    ca_url: str
    ttl: str
    vcpus: int | None = None
    platform: str = ""  # sev-snp, tdx; empty: what the host offers
    memory_mib: int | None = None


@dataclass(frozen=True, slots=True)
class Capacity:
    max_vms: int
    vms: int
    max_vcpus: int
    vcpus_used: int
    max_memory_mib: int
    memory_used_mib: int
    platforms: list[str]
    development: bool
    vcpu_counts: list[int]


def parse_go_duration(text: str) -> timedelta:
    """A Go duration (``1h30m``, ``90s``, ``250ms``); empty or "0" means none."""
    text = text.strip()
    if text in ("", "0"):
        return timedelta(0)
    position, seconds = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if position != len(text):
        raise ManagerError("invalid", f"ttl {text!r} is not a Go duration such as 30m or 1h30m")
    return timedelta(seconds=seconds)


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    sha256: str  # hex, of the certificate's DER
    subject: str  # its CN: the backend's CVM id
    authority_key_id: str  # hex: which CA (which backend deployment) issued it


def client_identity(cert_pem: bytes) -> ClientIdentity:
    try:
        certificate = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise ManagerError("invalid", "agent_cvm_client_cert is not a PEM certificate") from None
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        authority = certificate.extensions.get_extension_for_class(
            x509.AuthorityKeyIdentifier
        ).value.key_identifier
    except x509.ExtensionNotFound:
        authority = None
    der = certificate.public_bytes(serialization.Encoding.DER)
    return ClientIdentity(
        sha256=hashlib.sha256(der).hexdigest(),
        subject=str(names[0].value) if names else "",
        authority_key_id=authority.hex() if authority else "",
    )


AGENT_LOG_LEVELS = ("", "debug", "info", "warn", "error")


def check_request(request: CreateRequest) -> None:
    """Every CreateReq field is used; refuse the ones that could not work, by name."""
    if request.log_level.lower() not in AGENT_LOG_LEVELS:
        raise ManagerError("invalid", "agent_log_level must be debug, info, warn or error")
    host, separator, port = request.server_url.rpartition(":")
    if not separator or not host or not port.isdigit():
        raise ManagerError(
            "invalid", "agent_cvm_server_url must be host:port of the agents endpoint"
        )
    if b"-----BEGIN CERTIFICATE-----" not in request.server_ca_cert:
        raise ManagerError("invalid", "agent_cvm_server_ca_cert must be a PEM certificate")
    if b"PRIVATE KEY-----" not in request.client_key:
        raise ManagerError("invalid", "agent_cvm_client_key must be a PEM private key")
    if request.ca_url and not request.ca_url.startswith(("http://", "https://")):
        raise ManagerError("invalid", "agent_cvm_ca_url must be an http(s) URL when given")
    if request.platform not in ("", "sev-snp", "tdx"):
        raise ManagerError("invalid", "x-prism-platform must be sev-snp or tdx")


def guest_server_url(url: str) -> str:
    """The agents endpoint as the guest dials it: the host's loopback is 10.0.2.2 there."""
    host, separator, port = url.rpartition(":")
    if separator and host in LOOPBACK_NAMES:
        return f"{SLIRP_HOST}:{port}"
    return url


class VmManager:
    def __init__(
        self,
        settings: ManagerSettings,
        image: GuestImage,
        host: HostFacts,
        *,
        supervisor: Supervisor | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.image = image
        self.host = host
        self.store = VmStore(settings.data_dir / "vms")
        self.supervisor = supervisor or Supervisor(
            grace_seconds=settings.stop_grace_seconds,
            log_bytes=settings.console_log_bytes,
            logs_kept=settings.console_logs_kept,
        )
        self._now = now
        self._lock = threading.RLock()
        self._vms: dict[str, VmRecord] = {}
        self.counters = {"created": 0, "removed": 0, "expired": 0, "refused": 0, "exited": 0}

    # --- start and background ------------------------------------------------------

    def adopt(self) -> None:
        """Take back the VMs of a previous run: running ones are followed again,
        dead ones kept as stopped, half-made directories removed."""
        with self._lock:
            for record in self.store.load_all():
                if not record.pid:
                    # The manager died between launching QEMU and recording its PID.
                    found = find_by_name(record.id)
                    if found is not None:
                        record = record.with_changes(pid=found[0], pid_start=found[1])
                if self.supervisor.alive(record.pid, record.pid_start):
                    self.supervisor.follow_console(record.id, self.store.directory(record.id))
                    record = record.with_changes(state="running")
                    log.info("re-adopted VM %s (pid %d)", record.id, record.pid)
                elif record.state != "stopped":
                    record = record.with_changes(state="stopped")
                    log.warning("VM %s ended while the manager was away", record.id)
                self.store.save(record)
                self._vms[record.id] = record
            for orphan in self.store.orphans(set(self._vms)):
                log.warning("removing %s: a create that never finished", orphan)
                self.store.remove(orphan.name)

    def tick(self) -> None:
        """Once a second: expire TTLs, notice VMs whose QEMU ended."""
        now = self._now()
        with self._lock:
            records = list(self._vms.values())
        for record in records:
            if record.expires_at and datetime.fromisoformat(record.expires_at) <= now:
                log.info("VM %s reached its TTL", record.id)
                self.counters["expired"] += 1
                self.remove(record.id)
            elif record.state != "stopped" and not self.supervisor.alive(
                record.pid, record.pid_start
            ):
                log.warning("VM %s: its QEMU exited", record.id)
                self.counters["exited"] += 1
                self._update(record.with_changes(state="stopped"))
            elif record.state == "starting":
                self._update(record.with_changes(state="running"))

    # --- the four RPCs -----------------------------------------------------------------

    def create(self, request: CreateRequest) -> VmRecord:
        check_request(request)
        identity = client_identity(request.client_cert)
        ttl = parse_go_duration(request.ttl)
        with self._lock:
            for record in self._vms.values():
                if record.client_cert_sha256 == identity.sha256 and record.state != "stopped":
                    return record  # a retried CreateVm for the same agent
            launch, confidential = self._launch_kind(request.platform)
            vcpus = request.vcpus or self.settings.default_vcpus
            memory = request.memory_mib or self.settings.vm_memory_mib
            self._check_capacity(vcpus, memory)
            record = self._prepare(request, identity, launch, confidential, vcpus, memory, ttl)
            self.store.save(record)
            self._vms[record.id] = record
        try:
            pid, started = self.supervisor.launch(
                record.id, record.argv, self.store.directory(record.id)
            )
        except OSError as exc:
            self._forget(record.id)
            raise ManagerError("precondition", f"QEMU cannot start: {exc}") from exc
        record = record.with_changes(pid=pid, pid_start=started)
        self._update(record)
        self.counters["created"] += 1
        log.info("VM %s: %s, %d vCPU, port %d", record.id, record.platform, vcpus, record.port)
        return record

    def remove(self, vm_id: str) -> None:
        record = self.get(vm_id)
        self.supervisor.stop(record.id, record.pid, record.pid_start)
        self._forget(record.id)
        self.counters["removed"] += 1
        log.info("VM %s removed", record.id)

    def get(self, vm_id: str) -> VmRecord:
        with self._lock:
            record = self._vms.get(vm_id)
        if record is None:
            raise ManagerError("not_found", f"no VM {vm_id!r} on this manager")
        return record

    def records(self) -> list[VmRecord]:
        with self._lock:
            return sorted(self._vms.values(), key=lambda record: record.created_at)

    def policy(self, vm_id: str, policy_format: str) -> bytes:
        record = self.get(vm_id)
        if not record.confidential:
            raise ManagerError(
                "precondition",
                f"VM {vm_id} is not confidential (a plain VM on a host without SEV-SNP or "
                "TDX): no attestation policy can describe it",
            )
        return measure.render_policy(record.policy_inputs, policy_format)

    def capacity(self) -> Capacity:
        with self._lock:
            live = list(self._vms.values())
        return Capacity(
            max_vms=self.settings.max_vms,
            vms=len(live),
            max_vcpus=self.settings.max_vcpus,
            vcpus_used=sum(record.vcpus for record in live),
            max_memory_mib=self.settings.max_memory_mib,
            memory_used_mib=sum(record.memory_mib for record in live),
            platforms=sorted(platform.value for platform in self.host.platforms),
            development=self.settings.development,
            vcpu_counts=sorted(self.settings.vcpu_counts),
        )

    def close(self) -> None:
        self.supervisor.close()

    # --- inside --------------------------------------------------------------------------

    def _launch_kind(self, requested: str) -> tuple[qemu.Launch, bool]:
        offered = self.host.platforms
        wanted = qemu.Launch(requested) if requested in ("sev-snp", "tdx") else None
        if wanted is not None and wanted in offered:
            return wanted, True
        if wanted is None and offered:
            return sorted(offered)[0], True
        if self.settings.development:
            return qemu.Launch.PLAIN, False
        what = wanted.value if wanted else "SEV-SNP or TDX"
        raise ManagerError(
            "precondition",
            f"this host offers no {what} (detected: {', '.join(sorted(offered)) or 'none'}); "
            "a plain VM would not be confidential (allowed only in development mode)",
        )

    def _check_capacity(self, vcpus: int, memory: int) -> None:
        if vcpus not in self.settings.vcpu_counts:
            self.counters["refused"] += 1
            raise ManagerError(
                "invalid",
                f"{vcpus} vCPUs is not offered here; allowed: {self.settings.vcpu_counts}",
            )
        used = self.capacity()
        problems = []
        if used.vms + 1 > used.max_vms:
            problems.append(f"it holds {used.vms} of at most {used.max_vms} VMs")
        if used.vcpus_used + vcpus > used.max_vcpus:
            problems.append(f"{used.vcpus_used} of {used.max_vcpus} vCPUs are in use")
        if used.memory_used_mib + memory > used.max_memory_mib:
            problems.append(f"{used.memory_used_mib} of {used.max_memory_mib} MiB are in use")
        if problems:
            self.counters["refused"] += 1
            raise ManagerError("exhausted", "this manager is full: " + "; ".join(problems))

    def _prepare(
        self,
        request: CreateRequest,
        identity: ClientIdentity,
        launch: qemu.Launch,
        confidential: bool,
        vcpus: int,
        memory: int,
        ttl: timedelta,
    ) -> VmRecord:
        vm_id = str(uuid.uuid4())
        directory = self.store.directory(vm_id)
        certs, env = directory / "certs", directory / "env"
        certs.mkdir(parents=True)
        env.mkdir()
        _write_private(certs / "cert.pem", request.client_cert)
        _write_private(certs / "key.pem", request.client_key)
        _write_private(certs / "ca.pem", request.server_ca_cert)
        environment = self._environment(vm_id, identity.subject, request)
        _write_private(env / "environment", environment.encode())
        port = self._free_port()
        launch_settings = self._vm_launch(vm_id, launch, vcpus, memory, port, directory)
        now = self._now()
        return VmRecord(
            id=vm_id,
            client_cert_sha256=identity.sha256,
            client_cert_subject=identity.subject,
            client_cert_authority_key_id=identity.authority_key_id,
            port=port,
            vcpus=vcpus,
            memory_mib=memory,
            platform=launch.value,
            confidential=confidential,
            created_at=now.isoformat(),
            expires_at=(now + ttl).isoformat() if ttl else "",
            argv=qemu.command_line(launch_settings),
            kernel_command_line=launch_settings.firmware.append,
            firmware=_firmware_name(launch_settings.firmware, launch),
            cpu_type=launch_settings.cpu_model or qemu.default_cpu(launch_settings),
            image=self.image.description,
            policy_inputs=measure.policy_inputs(launch_settings, self.settings.host_data)
            if confidential
            else {},
        )

    def _environment(self, vm_id: str, subject: str, request: CreateRequest) -> str:
        # Cocos' agent layout: the agent knows itself by the backend's id (the
        # certificate's CN), which it sends as job-id.
        lines = {
            "AGENT_CVM_GRPC_URL": guest_server_url(request.server_url),
            "AGENT_CVM_ID": subject or vm_id,
            "AGENT_LOG_LEVEL": request.log_level or "info",
            "AGENT_CVM_CA_URL": request.ca_url,
            "AGENT_CVM_GRPC_CLIENT_CERT": "/etc/certs/cert.pem",
            "AGENT_CVM_GRPC_CLIENT_KEY": "/etc/certs/key.pem",
            "AGENT_CVM_GRPC_SERVER_CA_CERTS": "/etc/certs/ca.pem",
        }
        return "".join(f"{key}={value}\n" for key, value in lines.items())

    def _vm_launch(
        self, vm_id: str, launch: qemu.Launch, vcpus: int, memory: int, port: int, directory: Path
    ) -> qemu.VmLaunch:
        settings = self.settings
        firmware = qemu.Firmware(
            kernel=self.image.kernel,
            initrd=self.image.initrd,
            append=self.image.command_line,
            ovmf=settings.ovmf,
            igvm=settings.igvm,
        )
        return qemu.VmLaunch(
            name=vm_id,
            vcpus=vcpus,
            memory_mib=memory,
            launch=launch,
            accelerator=self.host.accelerator,
            firmware=firmware,
            host_port=port,
            certs_dir=directory / "certs",
            env_dir=directory / "env",
            # Relative to QEMU's working directory (the VM's): socket paths are
            # limited to 108 bytes, data directories are not.
            console_socket=Path(CONSOLE_SOCKET),
            sev_snp=qemu.SevSnpOptions(host_data=settings.host_data),
            qemu_binary=settings.qemu_binary,
        )

    def _free_port(self) -> int:
        taken = {record.port for record in self._vms.values()}
        for port in self.settings.ports:
            if port in taken:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
        raise ManagerError("exhausted", f"no free host port in {self.settings.port_range}")

    def _update(self, record: VmRecord) -> None:
        with self._lock:
            if record.id not in self._vms:
                return  # removed meanwhile
            self._vms[record.id] = record
            self.store.save(record)

    def _forget(self, vm_id: str) -> None:
        with self._lock:
            self._vms.pop(vm_id, None)
            self.store.remove(vm_id)


def _write_private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def _firmware_name(firmware: qemu.Firmware, launch: qemu.Launch) -> str:
    if launch is not qemu.Launch.PLAIN and firmware.igvm is not None:
        return f"IGVM {firmware.igvm.name}"
    if launch is not qemu.Launch.PLAIN and firmware.ovmf is not None:
        return f"OVMF {firmware.ovmf.name}"
    return "none (direct kernel boot)"
