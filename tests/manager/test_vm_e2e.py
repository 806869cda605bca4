"""The whole path with a real VM: ``serve --local-manager`` builds the guest
image, boots a plain VM under software emulation for an ``ultraviolet`` CVM,
the agent inside dials in over mutual TLS and the CVM turns running; a
manager killed in the middle is restarted and re-adopts the VM; DELETE ends
the QEMU process and removes every file the VM had.

Slow (the first image build, then a boot under emulation): marked ``slow``.
Skipped only where QEMU is not installed (``scripts/test`` installs it)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.manager.processes import eventually, process_alive

pytestmark = pytest.mark.slow
DOMAIN = "e2e-domain"
IMAGE_SECONDS = 600.0
BOOT_SECONDS = 240.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _missing_tools() -> list[str]:
    needed = ("qemu-system-x86_64", "apt-get", "dpkg-deb", "depmod", "modprobe")
    return [
        tool for tool in needed if shutil.which(tool) is None and not Path(f"/sbin/{tool}").exists()
    ]


@pytest.fixture(scope="session")
def images_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One guest image for every test of the session (built on first use)."""
    return tmp_path_factory.mktemp("guest-images")


class Service:
    def __init__(self, root: Path, images: Path) -> None:
        self.data_dir = root / "data"
        self.port, self.agents_port = _free_port(), _free_port()
        self.base = f"http://127.0.0.1:{self.port}/backends"
        self.log = root / "serve.log"
        environment = {
            **os.environ,
            "PRISM_BACKENDS_STATS_INTERVAL_SECONDS": "2",
            "PRISM_BACKENDS_HEARTBEAT_SECONDS": "2",
            "PRISM_BACKENDS_POLL_SECONDS": "0.2",
            "PRISM_MANAGER_IMAGES_DIR": str(images),
        }
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "prism_backends", "serve", "--local-manager",
                 "--data-dir", str(self.data_dir), "--port", str(self.port),
                 "--agents-port", str(self.agents_port)],
                stdout=sink, stderr=sink, env=environment,
            )  # fmt: skip
        self.token = ""

    def ready(self) -> None:
        def answering() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited: {self.tail()}")
            try:
                return httpx.get(f"{self.base}/openapi.json", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        eventually(answering, IMAGE_SECONDS, "serve --local-manager answers")
        self.token = subprocess.run(
            [sys.executable, "-m", "prism_backends", "token", "issue", "--domain", DOMAIN,
             "--data-dir", str(self.data_dir)],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.request(
            method, f"{self.base}/{DOMAIN}{path}", headers=headers, timeout=30, **kwargs
        )

    def cvm(self, cvm_id: str) -> dict[str, Any]:
        reply = self.call("GET", f"/cvms/{cvm_id}")
        assert reply.status_code == 200, reply.text
        data: dict[str, Any] = reply.json()
        return data

    def manager_pid(self) -> int:
        state = self.data_dir / "manager" / "manager.json"
        return int(json.loads(state.read_text())["pid"]) if state.is_file() else 0

    def tail(self) -> str:
        text = self.log.read_text(errors="replace")[-3000:]
        manager_log = self.data_dir / "manager" / "manager.log"
        if manager_log.is_file():
            text += "\n-- manager --\n" + manager_log.read_text(errors="replace")[-3000:]
        return text

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def service(tmp_path: Path, images_dir: Path) -> Iterator[Service]:
    missing = _missing_tools()
    if missing:
        pytest.skip(f"cannot boot VMs here: {', '.join(missing)} not installed "
                    "(scripts/test installs qemu-system-x86 and kmod as root)")  # fmt: skip
    running = Service(tmp_path, images_dir)
    try:
        running.ready()
        yield running
    finally:
        running.stop()
        for state in (running.data_dir / "manager").glob("vms/*/vm.json"):
            pid = int(json.loads(state.read_text()).get("pid", 0))
            if pid and process_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_an_ultraviolet_cvm_is_a_real_vm_whose_agent_dials_in(service: Service) -> None:
    created = service.call(
        "POST", "/cvms/ultraviolet/1/sev-snp", json={"name": "real-vm", "agent_log_level": "debug"}
    )
    assert created.status_code == 201, created.text
    cvm_id = created.json()["id"]
    started = time.monotonic()

    def provisioned() -> dict[str, Any] | None:
        cvm = service.cvm(cvm_id)
        return cvm if cvm["state"] == "provisioned" else None

    cvm = eventually(provisioned, 120, "the CVM is provisioned on the local manager")
    vm_dir = service.data_dir / "manager" / "vms" / cvm["cvm_id"]
    record = json.loads((vm_dir / "vm.json").read_text())
    qemu_pid = int(record["pid"])
    assert process_alive(qemu_pid)
    assert cvm["agent_url"] == f"localhost:{record['port']}"
    assert "not confidential" in cvm["attestation_error"]

    eventually(lambda: service.cvm(cvm_id)["status"] == "running", BOOT_SECONDS,
               f"the agent in the VM connects:\n{service.tail()}")  # fmt: skip
    boot_seconds = time.monotonic() - started

    def up_sample() -> bool:
        stats = service.call("GET", f"/cvms/{cvm_id}/statistics").json()
        return any(sample["status"] for sample in stats["cvm_stats"])

    eventually(up_sample, 30, "statistics record the CVM up")
    events = service.call("GET", f"/cvms/{cvm_id}/events", params={"limit": 100}).json()["events"]
    kinds = {event["kind"] for event in events}
    assert {"connected", "log", "provider"} <= kinds
    assert any(event["message"] == "agent started" for event in events if event["kind"] == "log")
    assert "prism-guest: starting the agent" in (vm_dir / "console.log").read_text()

    # The manager dies: it is started again, re-adopts the VM, and the CVM stays up.
    old_manager = service.manager_pid()
    os.kill(old_manager, signal.SIGKILL)
    eventually(lambda: service.manager_pid() not in (0, old_manager), 120,
               "the local manager is started again")  # fmt: skip
    manager_log = (service.data_dir / "manager" / "manager.log").read_text()
    assert f"re-adopted VM {cvm['cvm_id']}" in manager_log
    assert process_alive(qemu_pid)
    assert service.cvm(cvm_id)["status"] == "running"

    deleted_at = time.monotonic()
    assert service.call("DELETE", f"/cvms/{cvm_id}").status_code == 204
    eventually(lambda: not process_alive(qemu_pid), 60, "DELETE ends the QEMU process")
    eventually(lambda: not vm_dir.exists(), 30, "DELETE removes the VM's files")
    gone_seconds = time.monotonic() - deleted_at
    listed = service.call("GET", "/cvms", params={"status": "inactive"}).json()["cvms"]
    assert [item["id"] for item in listed] == [cvm_id]

    # Stopping serve stops its manager too (VMs, if any, would stay for the next start).
    manager = service.manager_pid()
    service.stop()
    assert service.process.returncode == 0, service.tail()
    eventually(lambda: not process_alive(manager), 30, "the local manager stops with serve")
    print(f"POST to running {boot_seconds:.1f} s; DELETE to no process {gone_seconds:.1f} s")
