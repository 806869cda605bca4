"""Real ``prism-backends manager`` processes, launching a QEMU stand-in (a
process that behaves like QEMU to the manager, without a guest) so the suite
stays fast; the end-to-end test boots real VMs instead."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from prism_backends.agents.pki import AgentCA, IssuedCertificate, create_ca
from prism_backends.manager.proto import inventory_pb2, inventory_pb2_grpc
from tests.manager import fake_ovmf

STANDIN = Path(__file__).parent / "qemu_standin.py"
READY_SECONDS = 30.0
T = TypeVar("T")


def eventually(check: Callable[[], T | None], timeout: float = 15.0, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found is not None and found is not False:
            return found
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


def process_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class ManagerProcess:
    data_dir: Path
    environment: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    health_port: int = 0
    _channel: grpc.Channel | None = field(default=None, repr=False)

    def start(self) -> ManagerProcess:
        state = self.data_dir / "manager.json"
        state.unlink(missing_ok=True)
        log = (self.data_dir / "manager.log").open("ab")
        argv = [sys.executable, "-m", "prism_backends", "manager", "--data-dir", str(self.data_dir)]
        self.process = subprocess.Popen(
            argv, stdout=log, stderr=log, env={**os.environ, **self.environment}
        )
        log.close()

        def up() -> dict[str, Any] | None:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"the manager exited: {self.log_tail()}")
            return json.loads(state.read_text()) if state.is_file() else None

        written = eventually(up, READY_SECONDS, "the manager writes manager.json")
        self.port, self.health_port = written["port"], written["health_port"]
        return self

    def log_tail(self) -> str:
        return (self.data_dir / "manager.log").read_text(errors="replace")[-3000:]

    @property
    def url(self) -> str:
        return f"localhost:{self.port}"

    @property
    def client_files(self) -> dict[str, str]:
        client = self.data_dir / "tls" / "client"
        return {
            "client_cert": str(client / "cert.pem"),
            "client_key": str(client / "key.pem"),
            "ca_cert": str(client / "ca.pem"),
        }

    def channel(self) -> grpc.Channel:
        if self._channel is None:
            files = {key: Path(value).read_bytes() for key, value in self.client_files.items()}
            credentials = grpc.ssl_channel_credentials(
                root_certificates=files["ca_cert"],
                private_key=files["client_key"],
                certificate_chain=files["client_cert"],
            )
            self._channel = grpc.secure_channel(self.url, credentials)
        return self._channel

    def inventory(self) -> inventory_pb2_grpc.InventoryStub:
        return inventory_pb2_grpc.InventoryStub(self.channel())

    def vms(self) -> list[inventory_pb2.Vm]:
        return list(self.inventory().ListVms(inventory_pb2.ListVmsReq(), timeout=10).vms)

    def kill(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Managers:
    root: Path
    started: list[ManagerProcess] = field(default_factory=list)

    def start(self, name: str, **settings: object) -> ManagerProcess:
        directory = self.root / name
        directory.mkdir(parents=True, exist_ok=True)
        environment = standin_environment(self.root, **settings)
        manager = ManagerProcess(directory, environment).start()
        self.started.append(manager)
        return manager

    def cleanup(self) -> None:
        for manager in self.started:
            manager.stop()
        # The VMs outlive their manager by design: end any stand-in left behind.
        for manager in self.started:
            for state in manager.data_dir.glob("vms/*/vm.json"):
                pid = json.loads(state.read_text()).get("pid", 0)
                if pid and process_alive(pid):
                    os.kill(pid, signal.SIGKILL)


_PORT_BLOCKS = itertools.count()


def own_port_range() -> str:
    """Twenty forwarded ports no other stand-in manager of this run uses. A
    manager picks a VM's port by probing that it is free, and its QEMU binds
    it a moment later: two managers on one host (two in one test, or tests on
    parallel workers) with the same range could both pick the port in that
    moment, and the second QEMU would exit. Below the kernel's ephemeral
    ports, so no port bound to 0 takes one either."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    block = next(_PORT_BLOCKS) % 50
    first = 10_000 + int(worker or 0) * 1_000 + block * 20
    return f"{first}-{first + 19}"


def standin_environment(root: Path, **settings: object) -> dict[str, str]:
    """Settings for a manager whose "QEMU" is the stand-in and whose guest
    files are small ones made here."""
    wrapper = root / "qemu"
    if not wrapper.exists():
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STANDIN}" "$@"\n')
        wrapper.chmod(0o755)
        (root / "vmlinuz").write_bytes(b"\x00kernel" * 4096)
        (root / "initrd.gz").write_bytes(b"\x00initrd" * 4096)
        fake_ovmf.write(root / "OVMF.amdsev.fd")
    values: dict[str, object] = {
        "qemu_binary": wrapper,
        "guest_kernel": root / "vmlinuz",
        "guest_initrd": root / "initrd.gz",
        "guest_command_line": "console=ttyS0",
        "ovmf": root / "OVMF.amdsev.fd",
        "port": 0,
        "health_port": 0,
        "stop_grace_seconds": 2,
        "accelerator": "tcg",
        "port_range": own_port_range(),
        **settings,
    }
    return {
        f"PRISM_MANAGER_{key.upper()}": json.dumps(value) if isinstance(value, list) else str(value)
        for key, value in values.items()
    }


@pytest.fixture
def managers(tmp_path: Path) -> Iterator[Managers]:
    started = Managers(tmp_path)
    try:
        yield started
    finally:
        started.cleanup()


@pytest.fixture(scope="session")
def agents_ca() -> AgentCA:
    return create_ca()


def agent_certificate(ca: AgentCA, cvm_id: str) -> IssuedCertificate:
    return ca.issue_client(cvm_id, "domain-1", timedelta(days=1))


def measured_by_the_cli(manager: ManagerProcess, *, vcpus: int) -> bytes:
    """sev-snp-measure's own command line on the files the manager launched."""
    root = manager.data_dir.parent
    done = subprocess.run(
        [sys.executable, "-m", "sevsnpmeasure.cli", "--mode", "snp", "--vcpus", str(vcpus),
         "--vcpu-type", "EPYC-v4", "--ovmf", str(root / "OVMF.amdsev.fd"),
         "--kernel", str(root / "vmlinuz"), "--initrd", str(root / "initrd.gz"),
         "--append", "console=ttyS0", "--guest-features", "0x1"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return bytes.fromhex(done.stdout.strip())
