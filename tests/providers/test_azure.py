"""The azure driver through azure-mgmt-compute, against a loopback fake of the
ARM subset (tests/fakes/azure_arm.py) with long-running-operation polling,
reached through the SDK's ``base_url``, checking the body the SDK really sent."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from prism_backends.providers.azure import AzureProvider, make_azure
from prism_backends.providers.base import (
    MachineRequest,
    MachineState,
    RetryableProviderError,
    TerminalProviderError,
)
from prism_backends.providers.config import ProviderConfig, ProviderConfigError
from prism_backends.vocabulary import Platform
from tests.fakes.azure_arm import FakeArm, serve
from tests.fakes.chaos import Injected
from tests.providers.machine_requests import machine_request

MARK = "0f1e2d3c4b5a"
SUBNET = (
    "/subscriptions/sub-1/resourceGroups/prism/providers/Microsoft.Network"
    "/virtualNetworks/prism/subnets/default"
)


@pytest.fixture
def arm() -> Iterator[tuple[FakeArm, str]]:
    fake = FakeArm(operation_seconds=0.1)
    server, url = serve(fake)
    try:
        yield fake, url
    finally:
        server.shutdown()
        server.server_close()


def settings_for(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "subscription_id": "sub-1",
        "resource_group": "prism",
        "location": "westeurope",
        "image": "Canonical:0001-com-ubuntu-confidential-vm-jammy:22_04-lts-cvm:latest",
        "subnet_id": SUBNET,
        "base_url": url,
        "anonymous_credentials": True,
        "vcpusSEV": [2, 4],
        "vcpusTDX": [2, 8],
        **extra,
    }


def provider_for(url: str, mark: str = MARK, **extra: Any) -> AzureProvider:
    return make_azure(
        ProviderConfig(
            name="azure",
            enabled=True,
            driver="azure",
            settings=settings_for(url, **extra),
            source="azure.toml",
            deployment_mark=mark,
        )
    )


def request_for(
    cvm_id: str, platform: Platform = Platform.SEV_SNP, vcpus: int = 2
) -> MachineRequest:
    return machine_request(cvm_id, platform=platform, vcpus=vcpus)


def test_create_describe_delete_and_sweep_listing_round_trip(arm: tuple[FakeArm, str]) -> None:
    fake, url = arm
    provider = provider_for(url)
    machine = provider.create(request_for("cvm-1"))
    assert machine.provider_machine_id == "prism-cvm-1"
    assert machine.state is MachineState.RUNNING

    [put] = fake.puts
    assert put["authorization"] == "Bearer anonymous"
    body: dict[str, Any] = put["body"]
    properties = body["properties"]
    assert body["location"] == "westeurope"
    assert body["tags"] == {
        "prism-backends-cvm": "cvm-1",
        "prism-backends-domain": "dom-1",
        "prism-backends-mark": MARK,
    }
    assert properties["hardwareProfile"] == {"vmSize": "Standard_DC2as_v5"}
    assert properties["securityProfile"] == {
        "securityType": "ConfidentialVM",
        "uefiSettings": {"secureBootEnabled": True, "vTpmEnabled": True},
    }
    disk = properties["storageProfile"]["osDisk"]
    assert disk["deleteOption"] == "Delete"
    assert disk["managedDisk"]["securityProfile"] == {"securityEncryptionType": "VMGuestStateOnly"}
    assert properties["storageProfile"]["imageReference"]["offer"] == (
        "0001-com-ubuntu-confidential-vm-jammy"
    )
    [nic] = properties["networkProfile"]["networkInterfaceConfigurations"]
    assert nic["properties"]["deleteOption"] == "Delete"
    [ip] = nic["properties"]["ipConfigurations"]
    assert ip["properties"]["subnet"] == {"id": SUBNET}
    assert ip["properties"]["publicIPAddressConfiguration"]["properties"]["deleteOption"] == (
        "Delete"
    )
    custom_data = base64.b64decode(properties["osProfile"]["customData"]).decode()
    assert custom_data.startswith("#cloud-config")
    assert properties["osProfile"]["linuxConfiguration"]["disablePasswordAuthentication"]
    assert set(fake.resources) == {"disk/prism-cvm-1", "nic/prism-cvm-1-nic", "ip/prism-cvm-1-ip"}

    assert provider.create(request_for("cvm-1")).provider_machine_id == "prism-cvm-1"
    assert len(fake.puts) == 1  # found again by its name, not created twice
    described = provider.describe("cvm-1", "prism-cvm-1")
    assert described is not None and described.state is MachineState.RUNNING

    provider_for(url, mark="other").create(request_for("cvm-theirs"))
    assert [m.cvm_id for m in provider.owned_machines()] == ["cvm-1"]
    provider.delete("cvm-1", machine.provider_machine_id)
    assert provider.describe("cvm-1", machine.provider_machine_id) is None
    assert fake.live_names() == ["prism-cvm-theirs"]
    assert not [r for r, vm in fake.resources.items() if vm == "prism-cvm-1"]  # all went with it
    provider.delete("cvm-1", machine.provider_machine_id)  # already gone: done


def test_tdx_goes_on_dcesv5(arm: tuple[FakeArm, str]) -> None:
    fake, url = arm
    provider_for(url).create(request_for("cvm-2", Platform.TDX, vcpus=8))
    assert fake.puts[0]["body"]["properties"]["hardwareProfile"] == {"vmSize": "Standard_DC8es_v5"}


def test_a_long_create_is_left_to_later_steps_without_blocking(arm: tuple[FakeArm, str]) -> None:
    fake, url = arm
    fake.operation_seconds = 1e9  # never finishes while we look
    provider = provider_for(url, operation_wait_seconds=0.2)
    started = time.monotonic()
    machine = provider.create(request_for("cvm-slow"))
    assert time.monotonic() - started < 5
    assert machine.state is MachineState.CREATING
    assert provider.create(request_for("cvm-slow")).state is MachineState.CREATING
    assert len(fake.puts) == 1
    with fake.lock:
        fake.operations = {}
        fake.vms["prism-cvm-slow"]["properties"]["provisioningState"] = "Succeeded"
        fake.vms["prism-cvm-slow"]["_statuses"] = [{"code": "PowerState/running"}]
    assert provider.create(request_for("cvm-slow")).state is MachineState.RUNNING


def test_a_delete_that_outlasts_the_wait_is_retried_until_gone(arm: tuple[FakeArm, str]) -> None:
    fake, url = arm
    provider = provider_for(url, operation_wait_seconds=0.2)
    fake.operation_seconds = 0
    provider.create(request_for("cvm-4"))
    fake.operation_seconds = 1e9
    with pytest.raises(RetryableProviderError, match="still being deleted"):
        provider.delete("cvm-4", "prism-cvm-4")
    with pytest.raises(RetryableProviderError, match="still being deleted"):
        provider.delete("cvm-4", "prism-cvm-4")  # not deleted twice: it waits
    assert provider.describe("cvm-4", "prism-cvm-4") is None  # going: not ours to count
    with fake.lock:
        fake.vms.clear()
    provider.delete("cvm-4", "prism-cvm-4")


@pytest.mark.parametrize(
    ("failure", "kind"),
    [
        (Injected("SkuNotAvailable", http_status=409), RetryableProviderError),
        (Injected("OperationNotAllowed", http_status=409), RetryableProviderError),
        (Injected("TooManyRequests", http_status=429), RetryableProviderError),
        (Injected("AllocationFailed"), RetryableProviderError),
        (Injected("InvalidParameter", http_status=400), TerminalProviderError),
        (Injected("AuthorizationFailed", http_status=403), TerminalProviderError),
        (Injected("ImageNotFound", http_status=404), TerminalProviderError),
    ],
)
def test_injected_failures_end_as_classified(
    arm: tuple[FakeArm, str],
    failure: Injected,
    kind: type[Exception],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    fake, url = arm
    # The SDK retries throttling itself (three times): the failure must outlast that.
    fake.failures.extend([failure] * (4 if failure.http_status == 429 else 1))
    request = request_for("cvm-3")
    provider = provider_for(url)
    with pytest.raises(kind, match=failure.code):
        provider.create(request)
    assert request.agent is not None
    assert request.agent.client_key_pem.decode().splitlines()[1] not in caplog.text


def test_a_vm_that_failed_for_capacity_is_deleted_and_made_again(
    arm: tuple[FakeArm, str],
) -> None:
    fake, url = arm
    fake.failures.append(Injected("AllocationFailed"))
    provider = provider_for(url)
    with pytest.raises(RetryableProviderError, match="AllocationFailed"):
        provider.create(request_for("cvm-5"))
    assert fake.vms["prism-cvm-5"]["properties"]["provisioningState"] == "Failed"
    with pytest.raises(RetryableProviderError, match="AllocationFailed"):
        provider.create(request_for("cvm-5"))  # the failed VM is removed ...
    assert fake.live_names() == []
    machine = provider.create(request_for("cvm-5"))  # ... and made again
    assert machine.state is MachineState.RUNNING
    assert len([p for p in fake.puts if p["name"] == "prism-cvm-5"]) == 2


def test_a_vm_that_failed_for_good_is_reported_failed(arm: tuple[FakeArm, str]) -> None:
    fake, url = arm
    fake.failures.append(Injected("VMStartTimedOut"))
    provider = provider_for(url)
    with pytest.raises(RetryableProviderError, match="VMStartTimedOut"):
        provider.create(request_for("cvm-6"))  # the operation's error: unknown, retried
    machine = provider.create(request_for("cvm-6"))
    assert machine.state is MachineState.FAILED
    assert "VMStartTimedOut" in machine.detail


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("subscription_id", "", "subscription_id"),
        ("image", "just-a-name", "publisher:offer:sku:version"),
        ("operation_wait_seconds", -1, "operation_wait_seconds"),
    ],
)
def test_bad_settings_are_named(key: str, value: Any, named: str) -> None:
    settings = {**settings_for("http://127.0.0.1:9"), key: value}
    with pytest.raises(ProviderConfigError, match=named):
        make_azure(ProviderConfig("azure", True, "azure", settings, source="azure.toml"))


def test_the_catalog_offers_only_sizes_azure_has(arm: tuple[FakeArm, str]) -> None:
    from prism_backends.providers.config import default_configs
    from prism_backends.providers.registry import build_catalog

    _fake, url = arm
    configs = default_configs()
    configs["azure"] = ProviderConfig(
        name="azure",
        enabled=True,
        driver="azure",
        settings=settings_for(url, vcpusSEV=[2, 3], vcpusTDX=[128]),
        source="azure.toml",
    )
    catalog = build_catalog(configs)
    entry = catalog.get("azure")
    assert entry is not None and isinstance(entry.provider, AzureProvider)
    assert entry.provider.offerings == {Platform.SEV_SNP: {2}, Platform.TDX: {128}}
    assert catalog.price_region("azure") == "westeurope"  # prices are looked up there
