"""Real manager processes, driven as a Cocos backend would drive them: with a
client compiled at test time from Cocos' published manager.proto."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import empty_pb2

from prism_backends.agents.pki import AgentCA
from prism_backends.manager import corim
from prism_backends.manager.proto import inventory_pb2
from tests.manager.processes import (
    ManagerProcess,
    Managers,
    agent_certificate,
    eventually,
    measured_by_the_cli,
    process_alive,
)
from tests.protoc import compile_proto, import_privately

COCOS_PROTO = Path(__file__).parent / "cocos" / "manager.proto"


@pytest.fixture(scope="module")
def cocos(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, ModuleType]:
    out = tmp_path_factory.mktemp("cocos-manager")
    compile_proto(COCOS_PROTO, out)
    pb2, pb2_grpc = import_privately(out, ("manager_pb2", "manager_pb2_grpc"),
                                     [empty_pb2.DESCRIPTOR])  # fmt: skip
    return pb2, pb2_grpc


def create_request(pb2: ModuleType, ca: AgentCA, cvm_id: str, ttl: str = "") -> object:
    issued = agent_certificate(ca, cvm_id)
    return pb2.CreateReq(
        agent_log_level="debug",
        agent_cvm_server_ca_cert=ca.cert_pem,
        agent_cvm_client_key=issued.key_pem,
        agent_cvm_client_cert=issued.cert_pem,
        agent_cvm_server_url="localhost:7018",
        ttl=ttl,
    )


def record_of(manager: ManagerProcess, vm_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((manager.data_dir / "vms" / vm_id / "vm.json").read_text())
    return data


def pid_of(manager: ManagerProcess, vm_id: str) -> int:
    return int(record_of(manager, vm_id)["pid"])


def test_a_cocos_client_drives_create_info_policy_and_remove(
    managers: Managers, cocos: tuple[ModuleType, ModuleType], agents_ca: AgentCA
) -> None:
    pb2, pb2_grpc = cocos
    manager = managers.start("snp", platforms=["sev-snp"], accelerator="kvm")
    stub = pb2_grpc.ManagerServiceStub(manager.channel())

    created = stub.CreateVm(create_request(pb2, agents_ca, "cvm-a"), timeout=20)
    first, last = map(int, manager.environment["PRISM_MANAGER_PORT_RANGE"].split("-"))
    assert created.forwarded_port.isdigit() and first <= int(created.forwarded_port) <= last
    record = record_of(manager, created.cvm_id)
    assert process_alive(int(record["pid"]))

    info = stub.CVMInfo(pb2.CVMInfoReq(id=created.cvm_id), timeout=10)
    assert info.id == created.cvm_id
    assert info.cpu_num == 1
    assert info.cpu_type == "EPYC-v4"
    assert info.kernel_cmd == "console=ttyS0"
    assert info.ovmf_version == "OVMF OVMF.amdsev.fd"

    policy = stub.AttestationPolicy(pb2.AttestationPolicyReq(id=created.cvm_id), timeout=20)
    assert policy.id == created.cvm_id
    values = corim.snp_reference_values(policy.info)
    expected = measured_by_the_cli(manager, vcpus=1)
    assert values["launch_measurement"] == expected
    assert values["guest_policy"] == 0x30000

    # The same through our JSON form: go-sev-guest check.Config.
    as_json = manager.inventory().Policy(
        inventory_pb2.PolicyReq(id=created.cvm_id, format="json"), timeout=20
    )
    config = json.loads(as_json.policy)
    assert base64.b64decode(config["policy"]["measurement"]) == expected

    # Environment and shares as a Cocos guest expects them.
    directory = manager.data_dir / "vms" / created.cvm_id
    environment = (directory / "env" / "environment").read_text()
    assert "AGENT_CVM_GRPC_URL=10.0.2.2:7018\n" in environment
    assert "AGENT_CVM_ID=cvm-a\n" in environment
    assert "AGENT_CVM_GRPC_CLIENT_CERT=/etc/certs/cert.pem\n" in environment
    assert sorted(p.name for p in (directory / "certs").iterdir()) == [
        "ca.pem",
        "cert.pem",
        "key.pem",
    ]
    console = directory / "console.log"
    eventually(lambda: console.is_file() and "booted" in console.read_text(), what="the console")

    stub.RemoveVm(pb2.RemoveReq(cvm_id=created.cvm_id), timeout=20)
    assert not process_alive(int(record["pid"]))
    assert not directory.exists()
    with pytest.raises(grpc.RpcError) as missing:
        stub.CVMInfo(pb2.CVMInfoReq(id=created.cvm_id), timeout=10)
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND


def test_a_retried_create_returns_the_same_vm_and_capacity_is_enforced(
    managers: Managers, cocos: tuple[ModuleType, ModuleType], agents_ca: AgentCA
) -> None:
    pb2, pb2_grpc = cocos
    manager = managers.start("small", development="true", max_vms=1)
    stub = pb2_grpc.ManagerServiceStub(manager.channel())
    request = create_request(pb2, agents_ca, "cvm-b")
    first = stub.CreateVm(request, timeout=20)
    again = stub.CreateVm(request, timeout=20)
    assert again.cvm_id == first.cvm_id
    assert again.forwarded_port == first.forwarded_port
    assert len(manager.vms()) == 1

    with pytest.raises(grpc.RpcError) as full:
        stub.CreateVm(create_request(pb2, agents_ca, "cvm-c"), timeout=20)
    assert full.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "1 of at most 1 VMs" in (full.value.details() or "")

    # A plain VM (development mode) says it is not confidential, and has no policy.
    [vm] = manager.vms()
    assert vm.platform == "none" and not vm.confidential
    with pytest.raises(grpc.RpcError) as no_policy:
        stub.AttestationPolicy(pb2.AttestationPolicyReq(id=first.cvm_id), timeout=10)
    assert no_policy.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "not confidential" in (no_policy.value.details() or "")

    health = httpx.get(f"http://127.0.0.1:{manager.health_port}/health").json()
    assert health["status"] == "ok" and health["vms"] == 1
    metrics = httpx.get(f"http://127.0.0.1:{manager.health_port}/metrics").text
    assert "prism_manager_vms 1\n" in metrics
    assert 'prism_manager_vm_operations_total{operation="refused"} 1' in metrics


def test_without_confidential_hardware_and_development_mode_creates_are_refused(
    managers: Managers, cocos: tuple[ModuleType, ModuleType], agents_ca: AgentCA
) -> None:
    pb2, pb2_grpc = cocos
    manager = managers.start("strict", accelerator="tcg")
    stub = pb2_grpc.ManagerServiceStub(manager.channel())
    with pytest.raises(grpc.RpcError) as refused:
        stub.CreateVm(create_request(pb2, agents_ca, "cvm-d"), timeout=20)
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "development mode" in (refused.value.details() or "")
    assert manager.vms() == []


def test_a_vm_past_its_ttl_is_removed_with_its_process_and_files(
    managers: Managers, cocos: tuple[ModuleType, ModuleType], agents_ca: AgentCA
) -> None:
    pb2, pb2_grpc = cocos
    manager = managers.start("ttl", development="true")
    stub = pb2_grpc.ManagerServiceStub(manager.channel())
    created = stub.CreateVm(create_request(pb2, agents_ca, "cvm-e", ttl="2s"), timeout=20)
    pid = pid_of(manager, created.cvm_id)
    [vm] = manager.vms()
    assert vm.expires_at
    eventually(lambda: manager.vms() == [], timeout=15, what="the TTL removes the VM")
    assert not process_alive(pid)
    assert not (manager.data_dir / "vms" / created.cvm_id).exists()


def test_a_restarted_manager_adopts_its_vms_and_restores_their_ttls(
    managers: Managers, cocos: tuple[ModuleType, ModuleType], agents_ca: AgentCA
) -> None:
    pb2, pb2_grpc = cocos
    manager = managers.start("restart", development="true")
    stub = pb2_grpc.ManagerServiceStub(manager.channel())
    kept = stub.CreateVm(create_request(pb2, agents_ca, "cvm-f"), timeout=20)
    timed = stub.CreateVm(create_request(pb2, agents_ca, "cvm-g", ttl="6s"), timeout=20)
    pids = {vm_id: pid_of(manager, vm_id) for vm_id in (kept.cvm_id, timed.cvm_id)}

    manager.kill()  # SIGKILL: nothing is saved on the way out
    assert all(process_alive(pid) for pid in pids.values())
    manager.start()
    listed = {vm.cvm_id: vm for vm in manager.vms()}
    assert set(listed) == set(pids)
    assert all(vm.state == "running" for vm in listed.values())
    assert "re-adopted VM" in manager.log_tail()

    # The TTL timer came back too, and removal still ends the adopted process.
    eventually(lambda: timed.cvm_id not in {vm.cvm_id for vm in manager.vms()}, timeout=20,
               what="the restored TTL removes the VM")  # fmt: skip
    assert not process_alive(pids[timed.cvm_id])
    stub = pb2_grpc.ManagerServiceStub(manager.channel())
    stub.RemoveVm(pb2.RemoveReq(cvm_id=kept.cvm_id), timeout=20)
    assert not process_alive(pids[kept.cvm_id])
    assert list((manager.data_dir / "vms").iterdir()) == []


def test_a_qemu_that_ignores_sigterm_is_killed_after_the_grace_period(
    managers: Managers,
    cocos: tuple[ModuleType, ModuleType],
    agents_ca: AgentCA,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pb2, pb2_grpc = cocos
    monkeypatch.setenv("STANDIN_IGNORE_TERM", "1")
    manager = managers.start("stubborn", development="true", stop_grace_seconds=1)
    stub = pb2_grpc.ManagerServiceStub(manager.channel())
    created = stub.CreateVm(create_request(pb2, agents_ca, "cvm-h"), timeout=20)
    pid = pid_of(manager, created.cvm_id)
    console = manager.data_dir / "vms" / created.cvm_id / "console.log"
    eventually(lambda: console.is_file() and "booted" in console.read_text(), what="the stand-in")
    stub.RemoveVm(pb2.RemoveReq(cvm_id=created.cvm_id), timeout=30)
    assert not process_alive(pid)
    assert "did not stop" in manager.log_tail()


def test_clients_without_the_managers_certificate_are_refused(managers: Managers) -> None:
    manager = managers.start("tls", development="true")
    ca = (manager.data_dir / "tls" / "client" / "ca.pem").read_bytes()
    anonymous = grpc.secure_channel(manager.url, grpc.ssl_channel_credentials(root_certificates=ca))
    stub = inventory_pb2.DESCRIPTOR  # noqa: F841 - the service is what is refused
    from prism_backends.manager.proto import inventory_pb2_grpc

    with pytest.raises(grpc.RpcError) as refused:
        inventory_pb2_grpc.InventoryStub(anonymous).Capacity(
            inventory_pb2.CapacityReq(), timeout=10
        )
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    anonymous.close()
