"""The ultraviolet driver against real manager processes (QEMU stand-ins):
placement by asked capacity, idempotency across managers, refusals, removal,
and the leak sweep claiming only this deployment's VMs."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from fastapi.testclient import TestClient

from prism_backends.agents.pki import AgentCA, create_ca
from prism_backends.config import Settings
from prism_backends.http.app import create_app
from prism_backends.lifecycle import sweeper
from prism_backends.lifecycle.worker import LifecycleWorkers
from prism_backends.providers.base import (
    MachineRequest,
    ProviderUnavailable,
    RetryableProviderError,
)
from prism_backends.providers.config import ProviderConfig, ProviderConfigError, parse_document
from prism_backends.providers.ultraviolet import UltravioletProvider, make_ultraviolet
from prism_backends.runtime import Runtime
from prism_backends.vocabulary import Platform
from tests.conftest import TokenFactory, auth
from tests.manager.processes import ManagerProcess, Managers, measured_by_the_cli, process_alive
from tests.providers.machine_requests import machine_request


def mark_of(ca: AgentCA) -> str:
    return x509.SubjectKeyIdentifier.from_public_key(ca.cert.public_key()).digest.hex()


def provider_for(
    *managers: ManagerProcess, ca: AgentCA | None = None, **settings: Any
) -> UltravioletProvider:
    tables = [{"url": m.url, "platforms": ["sev-snp", "tdx"], **m.client_files} for m in managers]
    config = ProviderConfig(
        name="ultraviolet",
        enabled=True,
        driver="ultraviolet",
        settings={"vcpusSEV": [1, 2, 4], "vcpusTDX": [1, 2, 4], "managers": tables, **settings},
        source="test",
        deployment_mark=mark_of(ca) if ca else "",
    )
    return make_ultraviolet(config)


def request_for(ca: AgentCA, cvm_id: str, vcpus: int = 1) -> MachineRequest:
    return machine_request(cvm_id, ca=ca, vcpus=vcpus, server_url="localhost:7018")


def test_placement_asks_capacity_and_takes_the_roomiest_manager(managers: Managers) -> None:
    ca = create_ca()
    small = managers.start("small", development="true", max_vcpus=4, vcpu_counts=[1, 2, 4])
    large = managers.start("large", development="true", max_vcpus=8, vcpu_counts=[1, 2, 4])
    provider = provider_for(small, large, ca=ca)

    first = provider.create(request_for(ca, "cvm-1", vcpus=4))
    assert first.agent_url == f"localhost:{large.vms()[0].forwarded_port}"  # 8 free > 4 free
    second = provider.create(request_for(ca, "cvm-2", vcpus=4))
    assert [vm.cvm_id for vm in small.vms()] == [second.provider_machine_id]  # a tie: more VMs free
    third = provider.create(request_for(ca, "cvm-3", vcpus=4))
    assert third.provider_machine_id in {vm.cvm_id for vm in large.vms()}
    with pytest.raises(RetryableProviderError, match="no sev-snp manager has room"):
        provider.create(request_for(ca, "cvm-4", vcpus=4))

    # Idempotent across managers: the VM already made for cvm-2 is found, not made again.
    again = provider.create(request_for(ca, "cvm-2", vcpus=4))
    assert again.provider_machine_id == second.provider_machine_id
    assert len(small.vms()) + len(large.vms()) == 3

    # Plain VMs (development managers) are marked not confidential, with the reason.
    assert not first.confidential and "not confidential" in first.detail
    assert first.attestation_policy is None


def test_offerings_come_from_the_managers_capacity(managers: Managers) -> None:
    manager = managers.start("offers", development="true", vcpu_counts=[2, 6])
    provider = provider_for(manager)
    assert provider.offerings == {Platform.SEV_SNP: {2, 6}, Platform.TDX: {2, 6}}


def test_delete_removes_the_vm_and_treats_not_found_as_done(managers: Managers) -> None:
    ca = create_ca()
    manager = managers.start("delete", development="true")
    provider = provider_for(manager, ca=ca)
    machine = provider.create(request_for(ca, "cvm-9"))
    [vm] = manager.vms()
    directory = manager.data_dir / "vms" / vm.cvm_id
    pid = int(json.loads((directory / "vm.json").read_text())["pid"])
    assert provider.describe("cvm-9", machine.provider_machine_id) is not None
    provider.delete("cvm-9", machine.provider_machine_id)
    assert manager.vms() == [] and not directory.exists() and not process_alive(pid)
    provider.delete("cvm-9", machine.provider_machine_id)  # already gone: done
    provider.delete("cvm-never", "")  # never reached a manager: done
    assert provider.describe("cvm-9", machine.provider_machine_id) is None


def test_an_unreachable_manager_makes_delete_retry(managers: Managers) -> None:
    manager = managers.start("gone", development="true")
    provider = provider_for(manager)
    manager.kill()
    with pytest.raises(RetryableProviderError, match="not asked"):
        provider.delete("cvm-x", "vm-x")


def provider_files(data_dir: Path, manager: ManagerProcess) -> Path:
    """A providers directory whose ultraviolet.toml reaches ``manager``."""
    providers = data_dir / "providers"
    providers.mkdir()
    files = manager.client_files
    (providers / "ultraviolet.toml").write_text(
        'name = "ultraviolet"\n[config]\nvcpusSEV = [1]\nvcpusTDX = [1]\n'
        f'[[config.managers]]\nurl = "{manager.url}"\nclient_cert = "{files["client_cert"]}"\n'
        f'client_key = "{files["client_key"]}"\nca_cert = "{files["ca_cert"]}"\n'
    )
    return providers


def test_the_backend_keeps_the_policy_an_snp_manager_measured(
    managers: Managers,
    make_settings: Callable[..., Settings],
    data_dir: Path,
    token: TokenFactory,
) -> None:
    manager = managers.start("snp", platforms=["sev-snp"], accelerator="kvm")
    runtime = Runtime(make_settings(providers_dir=provider_files(data_dir, manager)))
    try:
        with TestClient(create_app(runtime)) as client:
            headers = auth(token())
            reply = client.post(
                "/backends/dom-1/cvms/ultraviolet/1/sev-snp", json={"name": "snp"}, headers=headers
            )
            cvm_id = reply.json()["id"]
            assert (
                client.get(
                    f"/backends/dom-1/cvms/{cvm_id}/attestation_policy", headers=headers
                ).status_code
                == 409
            )  # not provisioned yet
            workers = LifecycleWorkers(
                runtime.settings, runtime.sessions, runtime.catalog, runtime.agent_bootstrap
            )
            assert workers.run_once()
            cvm = client.get(f"/backends/dom-1/cvms/{cvm_id}", headers=headers).json()
            assert cvm["state"] == "provisioned" and cvm["attestation_error"] == ""
            served = client.get(
                f"/backends/dom-1/cvms/{cvm_id}/attestation_policy", headers=headers
            )
        policy = json.loads(base64.b64decode(served.json()["attestation_policy"]))
        assert base64.b64decode(policy["policy"]["measurement"]) == measured_by_the_cli(
            manager, vcpus=1
        )
        assert policy["policy"]["policy"] == 0x30000
    finally:
        runtime.close()


def test_sweep_removes_only_this_deployments_vms_that_no_cvm_owns(
    managers: Managers,
    make_settings: Callable[..., Settings],
    data_dir: Path,
    token: TokenFactory,
) -> None:
    manager = managers.start("sweep", development="true")
    runtime = Runtime(make_settings(providers_dir=provider_files(data_dir, manager)))
    try:
        with TestClient(create_app(runtime)) as client:
            reply = client.post(
                "/backends/dom-1/cvms/ultraviolet/1/sev-snp",
                json={"name": "owned"},
                headers=auth(token()),
            )
            assert reply.status_code == 201, reply.text
            cvm_id = reply.json()["id"]
        workers = LifecycleWorkers(
            runtime.settings, runtime.sessions, runtime.catalog, runtime.agent_bootstrap
        )
        assert workers.run_once()  # pending -> provisioned: a VM on the manager
        [owned] = manager.vms()
        assert owned.client_cert_subject == cvm_id
        provider = runtime.catalog.get("ultraviolet").provider  # type: ignore[union-attr]
        ghost = provider.create(request_for(runtime.agent_ca, "cvm-without-a-row"))
        foreign_ca = create_ca()
        foreign = provider_for(manager, ca=foreign_ca).create(request_for(foreign_ca, "theirs"))

        report = sweeper.sweep(runtime.catalog, runtime.sessions)
        left = {vm.cvm_id for vm in manager.vms()}
        assert ghost.provider_machine_id not in left
        assert left == {owned.cvm_id, foreign.provider_machine_id}
        assert report.removed == 1
    finally:
        runtime.close()


def test_prism_style_configuration_is_read(tmp_path: Path) -> None:
    for name in ("cert", "key", "ca"):
        (tmp_path / f"{name}.pem").write_text(name)
    settings: dict[str, Any] = {
        "sev_snp_url": "127.0.0.1:9",  # nothing listens: no manager answers
        "sev_snp_client_cert": str(tmp_path / "cert.pem"),
        "sev_snp_client_key": str(tmp_path / "key.pem"),
        "sev_snp_ca_cert": str(tmp_path / "ca.pem"),
        "defaultplanTTL": "24h",
    }
    document: dict[str, Any] = {"name": "ultraviolet", "config": settings}
    config = parse_document(document, source="ultraviolet.toml", base_dir=tmp_path)
    provider = make_ultraviolet(config)  # no manager answers: the configured lists stand
    assert provider.offerings[Platform.SEV_SNP] == {1, 2, 4, 8, 16}
    broken = parse_document(
        {**document, "config": {**settings, "sev_snp_client_key": "/nonexistent"}},
        source="ultraviolet.toml",
        base_dir=tmp_path,
    )
    with pytest.raises(ProviderConfigError, match="sev_snp_client_key"):
        make_ultraviolet(broken)
    nothing = parse_document({"name": "ultraviolet"}, source="u.toml", base_dir=tmp_path)
    with pytest.raises(ProviderUnavailable, match="no manager is configured"):
        make_ultraviolet(nothing)


def test_an_unavailable_ultraviolet_is_left_out_of_the_catalog_saying_why(
    make_settings: Callable[..., Settings], data_dir: Path
) -> None:
    providers = data_dir / "providers"
    providers.mkdir()
    (providers / "ultraviolet.toml").write_text('name = "ultraviolet"\n')
    runtime = Runtime(make_settings(providers_dir=providers))
    try:
        assert runtime.catalog.get("ultraviolet") is None
        assert "no manager is configured" in runtime.catalog.why_unavailable("ultraviolet")
    finally:
        runtime.close()
