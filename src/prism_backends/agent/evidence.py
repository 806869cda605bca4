"""Attestation evidence from the hardware, bound to the agent's identity.

``report_data`` is SHA-512 of the agent's client certificate PEM (Cocos'
convention), so a verifier can tell the evidence belongs to this agent's
TLS identity. Linux offers two ways to ask: configfs-tsm (any TEE) and, for
SEV-SNP, the ``/dev/sev-guest`` ioctl. Without either there is no evidence.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

TSM_REPORTS = Path("/sys/kernel/config/tsm/report")
SEV_GUEST = Path("/dev/sev-guest")
# _IOWR('S', 0x0, struct snp_guest_request_ioctl): 32-byte argument.
SNP_GET_REPORT = 0xC0205300
SNP_REPORT_BYTES = 0x4A0


@dataclass(frozen=True, slots=True)
class Evidence:
    report: bytes  # SEV-SNP report (+ certificate table) or TDX quote
    source: str


def report_data_for(client_cert_pem: bytes) -> bytes:
    return hashlib.sha512(client_cert_pem).digest()


def gather(client_cert_pem: bytes) -> Evidence | None:
    """Evidence from whichever interface this machine has, or None."""
    report_data = report_data_for(client_cert_pem)
    if TSM_REPORTS.is_dir():
        return _from_configfs_tsm(report_data)
    if SEV_GUEST.exists():
        return _from_sev_guest(report_data)
    return None


def _from_configfs_tsm(report_data: bytes) -> Evidence:
    entry = TSM_REPORTS / f"prism-{uuid.uuid4().hex[:12]}"
    entry.mkdir()
    try:
        (entry / "inblob").write_bytes(report_data)
        report = (entry / "outblob").read_bytes()
        provider = (entry / "provider").read_text().strip() if (entry / "provider").exists() else ""
        certificates = b""
        aux = entry / "auxblob"
        if aux.exists():
            try:
                certificates = aux.read_bytes()
            except OSError:
                certificates = b""
        return Evidence(report=report + certificates, source=f"configfs-tsm ({provider})")
    finally:
        entry.rmdir()


class _ReportRequest(ctypes.Structure):
    _fields_ = [
        ("user_data", ctypes.c_uint8 * 64),
        ("vmpl", ctypes.c_uint32),
        ("reserved", ctypes.c_uint8 * 28),
    ]


class _GuestRequest(ctypes.Structure):
    _fields_ = [
        ("msg_version", ctypes.c_uint8),
        ("req_data", ctypes.c_uint64),
        ("resp_data", ctypes.c_uint64),
        ("exitinfo2", ctypes.c_uint64),
    ]


def _from_sev_guest(report_data: bytes) -> Evidence:
    request = _ReportRequest()
    ctypes.memmove(request.user_data, report_data, 64)
    response = ctypes.create_string_buffer(4000)
    guest = _GuestRequest(
        msg_version=1,
        req_data=ctypes.addressof(request),
        resp_data=ctypes.addressof(response),
    )
    fd = os.open(SEV_GUEST, os.O_RDWR)
    try:
        fcntl.ioctl(fd, SNP_GET_REPORT, guest)
    finally:
        os.close(fd)
    raw = response.raw
    status = int.from_bytes(raw[0:4], "little")
    size = int.from_bytes(raw[4:8], "little")
    if status != 0 or size < SNP_REPORT_BYTES:
        raise OSError(f"SNP_GET_REPORT failed: status {status:#x}, size {size}")
    return Evidence(report=raw[32 : 32 + size], source="/dev/sev-guest")
