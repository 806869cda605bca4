"""The gcp driver through google-cloud-compute, against a loopback fake of the
Compute Engine REST subset (tests/fakes/gcp_compute.py) reached through the
SDK's endpoint override, checking the body the SDK really sent."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from prism_backends.providers.base import (
    MachineRequest,
    MachineState,
    RetryableProviderError,
    TerminalProviderError,
)
from prism_backends.providers.config import ProviderConfig, ProviderConfigError
from prism_backends.providers.gcp import GcpProvider, make_gcp, request_id_for
from prism_backends.vocabulary import Platform
from tests.fakes.chaos import Injected
from tests.fakes.gcp_compute import FakeCompute, serve
from tests.providers.machine_requests import machine_request

MARK = "0f1e2d3c4b5a"


@pytest.fixture
def compute() -> Iterator[tuple[FakeCompute, str]]:
    fake = FakeCompute()
    server, url = serve(fake)
    try:
        yield fake, url
    finally:
        server.shutdown()
        server.server_close()


def provider_for(url: str, mark: str = MARK) -> GcpProvider:
    return make_gcp(
        ProviderConfig(
            name="gcp",
            enabled=True,
            driver="gcp",
            settings={
                "project_id": "my-project",
                "region": "us-central1",
                "image": "projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts",
                "api_endpoint": url,
                "anonymous_credentials": True,
                "vcpusSEV": [2, 4],
                "vcpusTDX": [4, 8],
            },
            source="gcp.toml",
            deployment_mark=mark,
        )
    )


def request_for(
    cvm_id: str, platform: Platform = Platform.SEV_SNP, vcpus: int = 2
) -> MachineRequest:
    return machine_request(cvm_id, platform=platform, vcpus=vcpus, domain_id="Dom.1")


def test_create_describe_delete_and_sweep_listing_round_trip(
    compute: tuple[FakeCompute, str],
) -> None:
    fake, url = compute
    provider = provider_for(url)
    machine = provider.create(request_for("cvm-1"))
    assert machine.provider_machine_id == "prism-cvm-1"
    assert machine.state is MachineState.RUNNING
    assert machine.agent_url == "10.128.0.7:7002"

    [insert] = fake.inserts
    body: dict[str, Any] = insert["body"]
    assert insert["requestId"] == request_id_for("cvm-1")
    assert body["machineType"] == "zones/us-central1-a/machineTypes/n2d-standard-2"
    assert body["minCpuPlatform"] == "AMD Milan"
    assert body["confidentialInstanceConfig"] == {"confidentialInstanceType": "SEV_SNP"}
    assert body["scheduling"]["onHostMaintenance"] == "TERMINATE"
    assert body["shieldedInstanceConfig"]["enableVtpm"] is True
    assert body["labels"] == {
        "prism-backends-cvm": "cvm-1",
        "prism-backends-domain": "dom_1",
        "prism-backends-mark": MARK,
    }
    [item] = body["metadata"]["items"]
    assert item["key"] == "user-data" and item["value"].startswith("#cloud-config")

    assert provider.create(request_for("cvm-1")).provider_machine_id == "prism-cvm-1"
    assert len(fake.inserts) == 1  # found again by its name, not inserted twice
    assert request_id_for("cvm-1", 1) not in (request_id_for("cvm-1"), request_id_for("cvm-2", 1))

    provider_for(url, mark="other").create(request_for("cvm-theirs"))
    assert [m.cvm_id for m in provider.owned_machines()] == ["cvm-1"]
    provider.delete("cvm-1", machine.provider_machine_id)
    assert provider.describe("cvm-1", machine.provider_machine_id) is None
    provider.delete("cvm-1", machine.provider_machine_id)  # already gone: done


def test_a_retry_after_a_failed_operation_uses_a_new_request_id(
    compute: tuple[FakeCompute, str],
) -> None:
    fake, url = compute
    provider = provider_for(url)
    fake.failures.append(Injected("ZONE_RESOURCE_POOL_EXHAUSTED"))
    with pytest.raises(RetryableProviderError):
        provider.create(request_for("cvm-9"))
    with pytest.raises(RetryableProviderError):  # the same id replays the failed operation
        provider.create(request_for("cvm-9"))
    retried = replace(request_for("cvm-9"), attempt=1)
    assert provider.create(retried).state is MachineState.RUNNING
    assert [i["requestId"] for i in fake.inserts] == [request_id_for("cvm-9")] * 2 + [
        request_id_for("cvm-9", 1)
    ]


def test_a_name_taken_by_an_earlier_attempt_is_that_machine(
    compute: tuple[FakeCompute, str],
) -> None:
    fake, url = compute
    provider = provider_for(url)
    provider.create(request_for("cvm-8"))
    with fake.lock:
        taken = dict(fake.instances)
    provider._get = lambda name: None  # type: ignore[method-assign]  # as if not seen yet
    machine = provider.create(replace(request_for("cvm-8"), attempt=3))
    assert machine.provider_machine_id == "prism-cvm-8"
    assert fake.instances == taken and fake.created["prism-cvm-8"] == 1


def test_tdx_goes_on_c3_without_a_cpu_platform(compute: tuple[FakeCompute, str]) -> None:
    fake, url = compute
    provider_for(url).create(request_for("cvm-2", Platform.TDX, vcpus=4))
    body = fake.inserts[0]["body"]
    assert body["machineType"].endswith("/c3-standard-4")
    assert body["confidentialInstanceConfig"] == {"confidentialInstanceType": "TDX"}
    assert "minCpuPlatform" not in body


@pytest.mark.parametrize(
    ("failure", "kind"),
    [
        (Injected("ZONE_RESOURCE_POOL_EXHAUSTED"), RetryableProviderError),
        (Injected("QUOTA_EXCEEDED"), RetryableProviderError),
        (Injected("rateLimitExceeded", http_status=429), RetryableProviderError),
        (Injected("forbidden", http_status=403), TerminalProviderError),
        (Injected("invalid", http_status=400), TerminalProviderError),
    ],
)
def test_injected_failures_end_as_classified(
    compute: tuple[FakeCompute, str],
    failure: Injected,
    kind: type[Exception],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    fake, url = compute
    fake.failures.append(failure)
    request = request_for("cvm-3")
    with pytest.raises(kind, match=failure.code):
        provider_for(url).create(request)
    assert fake.instances == {}
    assert request.agent is not None
    assert request.agent.client_key_pem.decode().splitlines()[1] not in caplog.text


def test_missing_keys_are_named() -> None:
    with pytest.raises(ProviderConfigError, match="project_id"):
        make_gcp(ProviderConfig("gcp", True, "gcp", {"region": "x"}, source="gcp.toml"))


def test_the_catalog_loads_the_driver_when_gcp_is_enabled(compute: tuple[FakeCompute, str]) -> None:
    from prism_backends.providers.config import default_configs
    from prism_backends.providers.registry import build_catalog

    _fake, url = compute
    configs = default_configs()
    configs["gcp"] = ProviderConfig(
        name="gcp",
        enabled=True,
        driver="gcp",
        settings={"project_id": "p", "region": "us-central1", "image": "i", "api_endpoint": url,
                  "anonymous_credentials": True, "vcpusSEV": [2], "vcpusTDX": []},
        source="gcp.toml",
    )  # fmt: skip
    entry = build_catalog(configs).get("gcp")
    assert entry is not None and isinstance(entry.provider, GcpProvider)
    assert entry.provider.offerings[Platform.SEV_SNP] == {2}
